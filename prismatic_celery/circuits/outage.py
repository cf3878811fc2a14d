"""A breaker's store outage: when the store cannot run a script, the breaker goes on in this process.

It goes on from the last record it knew (its times moved to this host's clock): an open circuit stays
open until its reset timeout, then this process runs at most one trial per reset timeout; failures count
from the last known counter. When the store answers again, the shared record is taken back, except that
an opening this process still holds is written to the store (it never shortens one there), and a store
that says closed while this process's copy is open or in its trial gets an opening of at least 1 ms: the
next call anywhere is then one trial.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TypedDict

from ..log import get_logger, log_event
from ..store import MemoryStore
from .cache import RecordCache
from .config import CircuitSpec
from .record import CLOSED, OPEN, CircuitRecord, Outcome, parse_reply
from .script import SCRIPT
from .storage import CircuitStorage

__all__ = ["Fallback", "Owner", "ScriptOptions"]

logger = get_logger("circuits")


class ScriptOptions(TypedDict):
    """The per-operation arguments of :meth:`CircuitStorage.apply`."""

    token: str
    amount_ms: int
    target: str
    reason: str


class Owner(Protocol):
    """The breaker a :class:`Fallback` decides for while the store is unreachable."""

    def remember(self, record: CircuitRecord, *, force: bool = False, notice: bool = True) -> bool:
        """Cache ``record`` (``force``: over a newer one; ``notice``: tell the listeners of a change)."""

    def observe_forced(self, outcome: Outcome) -> None:
        """The store took this process's opening back: a forced change, told as such."""


class Fallback:
    """Runs one breaker's scripts on the store, or on this process's copy of its record while it is unreachable."""

    def __init__(self, storage: CircuitStorage, cache: RecordCache, owner: Owner, *,
                 monotonic: Callable[[], float], clock: Callable[[], float]) -> None:
        self.storage = storage
        self.cache = cache
        self.owner = owner
        self._monotonic = monotonic
        self._clock = clock
        self._lock = threading.Lock()
        self.local: MemoryStore | None = None  # this process's copy while the store is unreachable

    def after_fork(self) -> None:
        """A forked child starts with fresh locks (a parent thread may have held one)."""
        self._lock = threading.Lock()
        if self.local is not None:
            self.local.lock = threading.RLock()

    def run(self, op: str, spec: CircuitSpec, options: ScriptOptions) -> Outcome:
        """One script run on the store; on this process's copy of the record while the store is unreachable."""
        if self.local is not None:
            probe = self.storage.apply("read", spec)
            if not probe.shared:
                return self._run_locally(op, spec, options)
            self._reconcile(probe, spec)
        outcome = self.storage.apply(op, spec, **options)
        if outcome.shared:
            return outcome
        self._go_local()
        return self._run_locally(op, spec, options)

    def _run_locally(self, op: str, spec: CircuitSpec, options: ScriptOptions) -> Outcome:
        local = self.local
        if local is None:  # the store answered again meanwhile
            return self.storage.apply(op, spec, **options)
        reply = local.run(SCRIPT, [self.storage.key], self.storage.arguments(op, spec, **options))
        return replace(parse_reply(self.storage.circuit, reply), shared=False)

    def _go_local(self) -> None:
        """The store is unreachable: go on from the last known record, moved to this host's clock."""
        with self._lock:
            if self.local is not None:
                return
            local = MemoryStore(clock=self._clock)
            known, seen_at = self.cache.last_known()
            if known is not None:
                shift = int(self._clock() * 1000) - (known.now_ms + int((self._monotonic() - seen_at) * 1000))
                local.set_raw(self.storage.key, {
                    "state": known.state, "fail_counter": str(known.fail_counter),
                    "success_counter": str(known.success_counter), "reason": known.reason, "seq": str(known.seq),
                    "opened_at_ms": str(known.opened_at_ms + shift if known.opened_at_ms else 0),
                    "open_until_ms": str(known.open_until_ms + shift if known.open_until_ms else 0),
                })
            self.local = local
        log_event(logging.WARNING, "circuit-store-unreachable", logger, name=self.storage.circuit,
                  state=known.state if known is not None else "unknown (closed)",
                  fallback="this process decides alone from the last state it knew until the store answers")

    def _reconcile(self, shared: Outcome, spec: CircuitSpec) -> None:
        """The store answers again: take its record back, writing back an opening this process still holds."""
        pushed: Outcome | None = None
        with self._lock:
            local = self.local
            if local is None:
                return
            reply = local.run(SCRIPT, [self.storage.key], self.storage.arguments("read", spec))
            mine = parse_reply(self.storage.circuit, reply).record
            left_ms = mine.wait_ms() if mine.state == OPEN else 0
            theirs = shared.record.wait_ms() if shared.record.state == OPEN else 0
            # The store says closed while this process's copy is open or trying (a store restarted without its
            # data, say): an opening of at least 1 ms goes back, so the next call anywhere is one trial, not
            # fail_max calls to a dependency this process last saw failing.
            failing = mine.state != CLOSED and shared.record.state == CLOSED
            if left_ms > theirs or failing:
                pushed = self.storage.apply("force", spec, target=OPEN, amount_ms=max(left_ms, 1),
                                            reason="store-outage")
                if not pushed.shared:  # gone again: stay on this process's copy
                    return
            self.local = None
            self.owner.remember((pushed or shared).record, force=True, notice=False)
        if pushed is not None:
            self.owner.observe_forced(pushed)
        log_event(logging.WARNING, "circuit-store-reachable", logger, name=self.storage.circuit,
                  local_state=mine.state, shared_state=(pushed or shared).record.state,
                  wrote_back_opening_ms=left_ms if pushed else 0)
