"""The shared breaker: a pybreaker ``CircuitBreaker`` whose decisions are single atomic scripts.

pybreaker's own call path reads the state, calls, then increments and checks the counter in
separate storage calls, serialised only by a per-process lock held around the whole call. Here
each call is:

1. **admit**: look at the cached record. CLOSED (not strict): call with no round trip. OPEN with
   time left: refuse with no round trip. Otherwise one ``acquire`` script decides atomically:
   half-open now and become *the* trial (one permit cluster-wide), take a strict permit, or be
   refused (:class:`CircuitOpenError`).
2. **call** the function (no lock held: threads in one process run concurrently). A generator
   is settled when it is exhausted or fails, as pybreaker does.
3. **settle**: a failure is one ``failure`` script (count, compare with ``fail_max``, open; a
   failed trial is counted too); a success writes only when there is something to reset.

Listeners are told as pybreaker tells them (:mod:`.listeners`); the record is cached per process
(:mod:`.cache`, kept fresh by :mod:`.hub`); while the store cannot run a script, the breaker goes on
in this process (:mod:`.outage`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TypeVar

import pybreaker

from ..store import Store
from .cache import RecordCache
from .calls import FREE, Allowance, CircuitOpenError, Guard, Ticket, guarded_call, tornado_call
from .config import CircuitSpec, Exclusion
from .events import EventSink, NoEvents, circuit_event
from .hub import Sync, default_cache_ttl, join
from .listeners import Notifier
from .outage import Fallback, ScriptOptions
from .record import CLOSED, HALF_OPEN, OPEN, CircuitRecord, Outcome
from .storage import CircuitStorage

__all__ = ["SharedBreaker"]

T = TypeVar("T")

_breakers: weakref.WeakSet[SharedBreaker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for breaker in list(_breakers):
        breaker._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedBreaker(pybreaker.CircuitBreaker):
    """A pybreaker ``CircuitBreaker`` whose state every process shares through the store.

    It takes pybreaker's arguments, in pybreaker's order, plus where the state lives: either
    ``state_storage``, a :class:`CircuitStorage` (what a worker's registry passes), or ``store``
    (a :class:`Store` or a Redis URL) with the app's ``namespace`` (``prismatic_namespace``,
    default the Celery app's main name) and the breaker's ``name``, which is how a web process
    or a script shares a breaker with the workers::

        payments = SharedBreaker(fail_max=5, reset_timeout=30, exclude=[NotFound], name="payments",
                                 store="redis://redis:6379/0", namespace="shop")

    Built that way, it joins one hub per store and namespace in the process (one pub/sub
    listener for all such breakers). ``strict``: admit calls only while failures plus calls in
    flight stay below ``fail_max`` (see :class:`CircuitSpec`); ``call_timeout``: the lease of a
    trial or strict permit, in seconds; ``events`` takes the state changes it makes (anything
    with ``emit(event)``, e.g. the runtime's dispatcher). ``monotonic`` and ``clock`` (wall time)
    are injectable.

    pybreaker's constructor runs as it is (it reads the state once, as pybreaker does). Overridden,
    because pybreaker's versions read-modify-write the storage in several steps: the call paths
    (``call``, ``calling``, ``call_async``), the forced transitions (``open``, ``half_open``,
    ``close``, the ``state`` setter), the state and counter getters (side-effect free here) and the
    limits (``fail_max``, ``reset_timeout``, ``success_threshold``, which every script run takes: kept
    in :attr:`spec`). Listener and exclusion management, ``name``, ``is_system_error``,
    ``throw_new_error_on_trip`` and the decorator are pybreaker's.
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 60,
        success_threshold: int = 1,
        exclude: Iterable[Exclusion] | None = None,
        listeners: Sequence[pybreaker.CircuitBreakerListener] | None = None,
        state_storage: CircuitStorage | None = None,
        name: str | None = None,
        throw_new_error_on_trip: bool = True,
        *,
        store: Store | str | None = None,
        namespace: str | None = None,
        strict: bool = False,
        call_timeout: float = 30.0,
        cache_ttl_s: float | None = None,
        events: EventSink | None = None,
        sync: Sync | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spec = CircuitSpec(
            fail_max=fail_max, reset_timeout_s=float(reset_timeout), exclude=tuple(exclude or ()),
            success_threshold=success_threshold, call_timeout_s=float(call_timeout), strict=strict,
        )
        hub = None
        if state_storage is None:
            if store is None:
                raise TypeError("a shared breaker needs state_storage, or store with namespace and name")
            if not namespace or not name:
                raise TypeError("a breaker built from a store needs namespace (the app's prismatic_namespace) and name")
            hub = join(store, namespace)
            state_storage = CircuitStorage(hub.store, hub.keys, name, spec=self._spec, channel=hub.channel)
            events, sync = events or hub.events, sync or hub.sync
            cache_ttl_s = hub.cache_ttl_s if cache_ttl_s is None else cache_ttl_s
        elif not isinstance(state_storage, CircuitStorage):
            raise TypeError(f"state_storage must be a CircuitStorage, not {type(state_storage).__name__}")
        elif store is not None:
            raise TypeError("give either state_storage or store, not both")
        state_storage.spec = self._spec
        self.storage = state_storage
        self.events: EventSink = events or NoEvents()
        self.cache_ttl_s = default_cache_ttl(state_storage.store) if cache_ttl_s is None else cache_ttl_s
        self._monotonic = monotonic
        self._cache = RecordCache(monotonic)
        self._fallback = Fallback(state_storage, self._cache, self, monotonic=monotonic, clock=clock)
        self._notifier = Notifier(self, state_storage.circuit)
        self._sync: Sync | None = None  # pybreaker's constructor reads the state: no listener thread for that
        super().__init__(
            fail_max=fail_max, reset_timeout=reset_timeout, success_threshold=success_threshold,
            exclude=list(self._spec.exclude), listeners=list(listeners or ()), state_storage=state_storage,
            name=name or state_storage.circuit, throw_new_error_on_trip=throw_new_error_on_trip,
        )
        self._sync = sync
        _breakers.add(self)
        if hub is not None:
            hub.adopt(self)

    @classmethod
    def from_spec(cls, storage: CircuitStorage, spec: CircuitSpec, *, events: EventSink | None = None,
                  cache_ttl_s: float | None = None, sync: Sync | None = None,
                  monotonic: Callable[[], float] = time.monotonic, clock: Callable[[], float] = time.time,
                  ) -> SharedBreaker:
        """The breaker ``spec`` declares, on ``storage``."""
        return cls(
            fail_max=spec.fail_max, reset_timeout=spec.reset_timeout_s, success_threshold=spec.success_threshold,
            exclude=spec.exclude, state_storage=storage, name=storage.circuit, strict=spec.strict,
            call_timeout=spec.call_timeout_s, events=events, cache_ttl_s=cache_ttl_s, sync=sync,
            monotonic=monotonic, clock=clock,
        )

    def _after_fork(self) -> None:
        """A forked child starts with fresh locks (a parent thread may have held one)."""
        self._cache.after_fork()
        self._fallback.after_fork()
        self._notifier.after_fork()
        self._lock = threading.RLock()

    @property
    def circuit(self) -> str:
        """The breaker's name in the store (never None, unlike pybreaker's ``name``)."""
        return self.storage.circuit

    # limits: pybreaker's setters, kept in one spec ----------------------------------------------
    @property
    def spec(self) -> CircuitSpec:
        """The breaker's limits as they are now."""
        return self._spec

    def _respec(self, spec: CircuitSpec) -> None:
        self._spec = self.storage.spec = spec

    @property
    def fail_max(self) -> int:
        return self._spec.fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self._respec(replace(self._spec, fail_max=number))

    @property
    def reset_timeout(self) -> float:
        return self._spec.reset_timeout_s

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        self._respec(replace(self._spec, reset_timeout_s=float(timeout)))

    @property
    def success_threshold(self) -> int:
        return self._spec.success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        self._respec(replace(self._spec, success_threshold=threshold))

    # the cached record -------------------------------------------------------------------------
    def remember(self, record: CircuitRecord, *, read_at: float | None = None, newer_only: bool = False,
                 force: bool = False, notice: bool = True) -> bool:
        """Cache ``record`` unless the cached one is newer (higher ``seq``); True when taken.

        A record with ``seq`` 0 (the hash is absent: deleted by an operator) always replaces, and
        so does any with ``force``. A state different from the cached one is a change this process
        noticed: pybreaker's ``state_change`` listeners hear of it (unless ``notice`` is False).
        """
        taken, cached = self._cache.take(record, read_at=read_at, newer_only=newer_only, force=force)
        if taken and notice and cached is not None and cached.state != record.state:
            self._notifier.state_changed(cached.state, record.state)
        return taken

    def invalidate(self) -> None:
        """Forget the cached record: the next look reads the store."""
        self._cache.invalidate()

    def view(self) -> tuple[CircuitRecord, int]:
        """The cached record (re-read when older than ``cache_ttl_s``) and the estimated store time in ms."""
        if self._sync is not None:
            self._sync.ensure_listening()
        now = self._monotonic()
        record, read_at = self._cache.current()
        if record is None or now - read_at >= self.cache_ttl_s:
            fresh = self._observe(self._run("read"), read_at=now).record
            record, read_at = self._cache.current()
            if record is None or read_at == -float("inf"):  # invalidated meanwhile: this read is the news
                record, read_at = fresh, now
        return record, record.now_ms + int((now - read_at) * 1000)

    def record(self) -> CircuitRecord:
        """The shared record, read from the store now (one round trip; this process's copy during an outage)."""
        return self._observe(self._run("read")).record

    @property
    def shared(self) -> bool:
        """False while the store is unreachable and this process decides alone."""
        return self._fallback.local is None

    def observe_forced(self, outcome: Outcome) -> None:
        """A forced change made by this process (pybreaker tells its listeners of every one)."""
        self._observe(outcome, forced=True)

    # pybreaker's state surface, side-effect free ----------------------------------------------
    @property
    def current_state(self) -> str:
        """The state as this process knows it (bounded staleness, see the module docstring)."""
        return self.view()[0].state

    @property
    def state(self) -> pybreaker.CBStateType:
        """A pybreaker state object for the current state (pybreaker's getter writes on read; this never does)."""
        return self._create_new_state(self.current_state)

    @state.setter
    def state(self, state_str: str) -> None:
        self.force(state_str)

    @property
    def fail_counter(self) -> int:
        return self.record().fail_counter

    @property
    def success_counter(self) -> int:
        return self.record().success_counter

    def allows(self) -> Allowance:
        """Whether a call would be let through now (no round trip while the cache is fresh).

        An OPEN circuit whose reset timeout has passed allows a call: that call will try to
        become the single trial and may still be refused if another caller wins.
        """
        record, now_ms = self.view()
        wait_ms = record.wait_ms(now_ms)
        if record.state == HALF_OPEN and record.permits:
            wait_ms = min(wait_ms, self._spec.reset_timeout_ms)
        return Allowance(allowed=wait_ms == 0, retry_after_s=wait_ms / 1000, state=record.state)

    # forced transitions ------------------------------------------------------------------------
    def force(self, state: str, *, duration_ms: int | None = None) -> CircuitRecord:
        """Set the state cluster-wide; OPEN lasts ``duration_ms`` (default: the reset timeout)."""
        if state not in (CLOSED, OPEN, HALF_OPEN):
            raise ValueError(f"unknown circuit state {state!r}")
        amount = self._spec.reset_timeout_ms if duration_ms is None else max(1, int(duration_ms))
        return self._observe(self._run("force", target=state, amount_ms=amount), forced=True).record

    def open_for(self, duration_ms: int) -> CircuitRecord:
        """Force OPEN for ``duration_ms`` (never shortening a longer opening), then half-open as usual."""
        return self.force(OPEN, duration_ms=duration_ms)

    def open(self) -> bool:
        self.force(OPEN)
        return self._throw_new_error_on_trip

    def half_open(self) -> None:
        self.force(HALF_OPEN)

    def close(self) -> None:
        self.force(CLOSED)

    # the call path -----------------------------------------------------------------------------
    def admit(self) -> Ticket:
        """Decide whether a call may start; raises :class:`CircuitOpenError` when it may not."""
        record, now_ms = self.view()
        spec = self._spec
        if record.state == CLOSED and not spec.strict:
            return FREE
        if record.state == OPEN and record.open_until_ms > now_ms:
            raise self._refusal(record, record.open_until_ms - now_ms, "is open")
        token = uuid.uuid4().hex
        outcome = self._observe(self._run("acquire", token=token))
        if outcome.verdict in ("trial", "permit"):
            return Ticket(outcome.verdict, token)
        if outcome.verdict == "allowed":
            return FREE
        record = outcome.record
        if record.state == OPEN:
            raise self._refusal(record, record.wait_ms(), "is open")
        what = "has its trial call in flight" if record.state == HALF_OPEN else "has no call left in its strict budget"
        wait_ms = min(max(record.permit_until_ms - record.now_ms, 1), spec.reset_timeout_ms)
        raise self._refusal(record, wait_ms, what)

    def succeeded(self, ticket: Ticket) -> None:
        """Record a success: no write when the circuit is closed with no failure counted."""
        if not ticket.token:
            cached = self._cache.record
            if cached is None or cached.state != CLOSED or cached.fail_counter == 0:
                self._notifier.tell("success")
                return
        self._observe(self._run("success", token=ticket.token))
        self._notifier.tell("success")

    def failed(self, ticket: Ticket, exc: BaseException) -> None:
        """Record a failure; raises :class:`CircuitOpenError` from ``exc`` when this failure opened it.

        Excluded exceptions count as a success; a ``BaseException`` that is not an ``Exception``
        (``KeyboardInterrupt``, ``SystemExit``, a generator closed early) is neither: the permit
        is released.
        """
        if not isinstance(exc, Exception):
            if ticket.token:
                self._observe(self._run("release", token=ticket.token))
            return
        if not self.is_system_error(exc):
            self.succeeded(ticket)
            return
        outcome = self._run("failure", token=ticket.token)
        self._notifier.tell("failure", exc)
        self._observe(outcome)
        if outcome.verdict == "opened" and self._throw_new_error_on_trip:
            why = "trial call failed" if outcome.old_state == HALF_OPEN else "failure threshold reached"
            raise self._refusal(outcome.record, outcome.record.wait_ms(), f"opened: {why}") from exc

    def call(self, func: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Call ``func`` under the breaker (no lock is held while it runs; a generator is settled when done)."""
        return guarded_call(self, func, *args, **kwargs)

    def call_async(self, func: Callable[..., object], *args: object, **kwargs: object) -> object:
        """pybreaker's Tornado call, on the same atomic path as :meth:`call` (needs tornado)."""
        return tornado_call(self, func, *args, **kwargs)

    def calling(self) -> Guard[SharedBreaker]:  # type: ignore[override]  # a plain context manager, not a generator one
        """``with breaker.calling(): ...`` guards the block."""
        return Guard(self)

    def guard(self) -> Guard[SharedBreaker]:
        """Same as :meth:`calling`."""
        return Guard(self)

    def before_call(self, func: Callable[..., object], *args: object, **kwargs: object) -> None:
        """pybreaker's ``before_call`` to every listener."""
        self._notifier.tell("before_call", func, *args, **kwargs)

    # the store, or this process's copy while it is unreachable ---------------------------------
    def _run(self, op: str, *, token: str = "", amount_ms: int = 0, target: str = "", reason: str = "") -> Outcome:
        """One script run on the store; on this process's copy of the record while the store is unreachable."""
        options: ScriptOptions = {"token": token, "amount_ms": amount_ms, "target": target, "reason": reason}
        return self._fallback.run(op, self._spec, options)

    # bookkeeping -------------------------------------------------------------------------------
    def _refusal(self, record: CircuitRecord, wait_ms: int, what: str) -> CircuitOpenError:
        return CircuitOpenError(self.circuit, record.state, max(0, wait_ms) / 1000, what)

    def _observe(self, outcome: Outcome, *, read_at: float | None = None, forced: bool = False) -> Outcome:
        self.remember(outcome.record, read_at=read_at, notice=not forced)
        if forced:  # pybreaker tells its listeners of every forced transition, even to the same state
            self._notifier.state_changed(outcome.old_state, outcome.record.state)
        if outcome.transitioned or (forced and outcome.changed):
            self.events.emit(circuit_event(outcome, self.fail_max))  # once cluster-wide: the process that changed it
        return outcome
