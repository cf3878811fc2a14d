"""The shared breaker: a pybreaker ``CircuitBreaker`` whose decisions are single atomic scripts.

pybreaker's own call path reads the state, calls, then increments and checks the counter in
separate storage calls, serialised only by a per-process lock. Here each call is:

1. **admit**: look at the cached record. CLOSED (and, for a strict breaker, no failure counted):
   call with no round trip. OPEN with time left: refuse with no round trip. Otherwise one
   ``acquire`` script decides atomically: half-open now and become *the* trial (one permit
   cluster-wide), take a strict permit, or be refused (:class:`CircuitOpenError`).
2. **call** the function (no lock held: threads in one process run concurrently).
3. **settle**: a failure is one ``failure`` script (count, compare with ``fail_max``, open);
   a success writes only when there is something to reset (fail counter above 0, or a permit).

Cache and staleness: the record is cached per process and replaced by every script reply and
by each message on the events channel (see :mod:`prismatic_celery.circuits.registry`); with no
message at all it is re-read after ``cache_ttl_s``. So a state change made elsewhere is seen
within ``cache_ttl_s`` at worst (1 s by default on Redis), usually within a pub/sub delivery.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol, TypeVar

import pybreaker

from ..errors import PrismaticError
from ..listeners import Dispatcher, SupervisionEvent
from ..log import get_logger, log_event
from .config import CircuitSpec
from .storage import CLOSED, HALF_OPEN, OPEN, CircuitRecord, CircuitStorage, Outcome

__all__ = ["Allowance", "CircuitOpenError", "Guard", "SharedBreaker", "Ticket"]

T = TypeVar("T")
logger = get_logger("circuits")


class CircuitOpenError(PrismaticError, pybreaker.CircuitBreakerError):
    """The call was not made: the circuit is open, its one trial is taken, or (strict) its budget is.

    ``retry_after_s`` says when a call may be tried again: the time left until half-open, or
    the trial's lease (a task can be re-queued with that countdown).
    """

    def __init__(self, name: str, state: str, retry_after_s: float, message: str) -> None:
        self.name = name
        self.state = state
        self.retry_after_s = retry_after_s
        super().__init__(f"circuit {name!r} {message} (state {state}, retry after {retry_after_s:.3f}s)")


@dataclass(frozen=True)
class Allowance:
    """Whether a call is allowed now; if not, ``retry_after_s`` until one may be tried. Truthy when allowed."""

    allowed: bool
    retry_after_s: float
    state: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Ticket:
    """How a call was admitted: ``free`` (no permit held) or holding ``trial`` / ``permit`` ``token``."""

    kind: str
    token: str = ""


FREE = Ticket("free")


class Hub(Protocol):
    """Keeps a breaker's cache in sync (the registry's pub/sub listener)."""

    def ensure_listening(self) -> None:
        """Called before each cache read: start listening in this process if needed."""


class _NoHub:
    """Null object for a breaker that nobody keeps in sync."""

    def ensure_listening(self) -> None:
        """Nothing to start."""


class SharedBreaker(pybreaker.CircuitBreaker):
    """A circuit breaker whose state is shared through a :class:`CircuitStorage`.

    Use it like a pybreaker breaker (``breaker.call(f)``, ``@breaker``, ``with breaker.calling():``).
    ``monotonic`` is injectable for tests. ``hub`` is told before each cache read so it can
    (re)start the invalidation listener (e.g. after a fork).
    """

    def __init__(
        self,
        storage: CircuitStorage,
        *,
        dispatcher: Dispatcher | None = None,
        cache_ttl_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        hub: Hub | None = None,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        self.storage = storage
        self.spec: CircuitSpec = storage.spec
        self.dispatcher = dispatcher or Dispatcher()
        self.cache_ttl_s = cache_ttl_s
        self._monotonic = monotonic
        self._hub: Hub = hub or _NoHub()
        self._cache_lock = threading.Lock()
        self._record: CircuitRecord | None = None
        self._read_at = -float("inf")
        self._constructed = False  # pybreaker's __init__ asks for the state: answer without I/O
        super().__init__(
            fail_max=self.spec.fail_max,
            reset_timeout=self.spec.reset_timeout_s,
            success_threshold=self.spec.success_threshold,
            exclude=list(self.spec.exclude),
            listeners=list(listeners),
            state_storage=storage,
            name=storage.circuit,
            throw_new_error_on_trip=True,
        )
        self._constructed = True

    @property
    def circuit(self) -> str:
        """The breaker's name (never None, unlike pybreaker's ``name``)."""
        return self.storage.circuit

    def _limits(self) -> CircuitSpec:
        """The spec with pybreaker's mutable settings (``fail_max``...) applied."""
        if (self.fail_max, self.reset_timeout, self.success_threshold) == (
            self.spec.fail_max, self.spec.reset_timeout_s, self.spec.success_threshold
        ):
            return self.spec
        return replace(
            self.spec, fail_max=self.fail_max, reset_timeout_s=self.reset_timeout,
            success_threshold=self.success_threshold,
        )

    # the cached record -------------------------------------------------------------------------
    def remember(self, record: CircuitRecord, *, read_at: float | None = None, newer_only: bool = False) -> bool:
        """Cache ``record`` unless the cached one is newer (higher ``seq``); True when taken.

        A record with ``seq`` 0 (the hash is absent: deleted by an operator) always replaces.
        """
        at = self._monotonic() if read_at is None else read_at
        with self._cache_lock:
            cached = self._record
            stale = cached is not None and (record.seq < cached.seq or (newer_only and record.seq == cached.seq))
            if stale and record.seq != 0:
                return False
            self._record = record
            self._read_at = at
            return True

    def invalidate(self) -> None:
        """Forget the cached record: the next look reads the store."""
        with self._cache_lock:
            self._read_at = -float("inf")

    def view(self) -> tuple[CircuitRecord, int]:
        """The cached record (re-read when older than ``cache_ttl_s``) and the estimated store time in ms."""
        self._hub.ensure_listening()
        now = self._monotonic()
        with self._cache_lock:
            record, read_at = self._record, self._read_at
        if record is None or now - read_at >= self.cache_ttl_s:
            record = self._observe(self.storage.apply("read", self._limits()), read_at=now).record
            with self._cache_lock:
                record, read_at = self._record or record, self._read_at
        return record, record.now_ms + int((now - read_at) * 1000)

    def record(self) -> CircuitRecord:
        """The shared record, read from the store now (one round trip)."""
        return self._observe(self.storage.apply("read", self._limits())).record

    # pybreaker's state surface, side-effect free ----------------------------------------------
    @property
    def current_state(self) -> str:
        """The state as this process knows it (bounded staleness, see the module docstring)."""
        if not self._constructed:
            return CLOSED
        return self.view()[0].state

    @property
    def state(self) -> Any:
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
            wait_ms = min(wait_ms, self._limits().reset_timeout_ms)
        return Allowance(allowed=wait_ms == 0, retry_after_s=wait_ms / 1000, state=record.state)

    # forced transitions ------------------------------------------------------------------------
    def force(self, state: str, *, duration_ms: int | None = None) -> CircuitRecord:
        """Set the state cluster-wide; OPEN lasts ``duration_ms`` (default: the reset timeout)."""
        if state not in (CLOSED, OPEN, HALF_OPEN):
            raise ValueError(f"unknown circuit state {state!r}")
        limits = self._limits()
        amount = limits.reset_timeout_ms if duration_ms is None else max(1, int(duration_ms))
        return self._observe(self.storage.apply("force", limits, target=state, amount_ms=amount), forced=True).record

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
        limits = self._limits()
        if record.state == CLOSED and not (limits.strict and record.fail_counter > 0):
            return FREE
        if record.state == OPEN and record.open_until_ms > now_ms:
            raise self._refusal(record, record.open_until_ms - now_ms, "is open")
        token = uuid.uuid4().hex
        outcome = self._observe(self.storage.apply("acquire", limits, token=token))
        if outcome.verdict in ("trial", "permit"):
            return Ticket(outcome.verdict, token)
        if outcome.verdict == "allowed":
            return FREE
        record = outcome.record
        if record.state == OPEN:
            raise self._refusal(record, record.wait_ms(), "is open")
        what = "has its trial call in flight" if record.state == HALF_OPEN else "has used its failure budget"
        wait_ms = min(max(record.permit_until_ms - record.now_ms, 1), limits.reset_timeout_ms)
        raise self._refusal(record, wait_ms, what)

    def succeeded(self, ticket: Ticket) -> None:
        """Record a success: no write when the circuit is closed with no failure counted."""
        if ticket is FREE or not ticket.token:
            with self._cache_lock:
                cached = self._record
            if cached is None or cached.state != CLOSED or cached.fail_counter == 0:
                self._notify("success")
                return
        self._observe(self.storage.apply("success", self._limits(), token=ticket.token))
        self._notify("success")

    def failed(self, ticket: Ticket, exc: BaseException) -> None:
        """Record a failure; raises :class:`CircuitOpenError` from ``exc`` when this failure opened it.

        Excluded exceptions count as a success; a ``BaseException`` that is not an ``Exception``
        (``KeyboardInterrupt``, ``SystemExit``) is neither: the permit is released.
        """
        if not isinstance(exc, Exception):
            if ticket.token:
                self._observe(self.storage.apply("release", self._limits(), token=ticket.token))
            return
        if not self.is_system_error(exc):
            self.succeeded(ticket)
            return
        outcome = self._observe(self.storage.apply("failure", self._limits(), token=ticket.token))
        self._notify("failure", exc)
        if outcome.verdict == "opened" and self._throw_new_error_on_trip:
            why = "trial call failed" if outcome.old_state == HALF_OPEN else "failure threshold reached"
            raise self._refusal(outcome.record, outcome.record.wait_ms(), f"opened: {why}") from exc

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` under the breaker (no lock is held while it runs)."""
        ticket = self.admit()
        for listener in self.listeners:
            self._isolated(listener.before_call, self, func, *args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self.failed(ticket, exc)
            raise
        self.succeeded(ticket)
        return result

    def calling(self) -> Guard:  # type: ignore[override]  # a plain context manager, not a generator one
        """``with breaker.calling(): ...`` guards the block."""
        return Guard(self)

    def guard(self) -> Guard:
        """Same as :meth:`calling`."""
        return Guard(self)

    # bookkeeping -------------------------------------------------------------------------------
    def _refusal(self, record: CircuitRecord, wait_ms: int, what: str) -> CircuitOpenError:
        return CircuitOpenError(self.circuit, record.state, max(0, wait_ms) / 1000, what)

    def _observe(self, outcome: Outcome, *, read_at: float | None = None, forced: bool = False) -> Outcome:
        self.remember(outcome.record, read_at=read_at)
        if outcome.transitioned or (forced and outcome.changed):
            self._announce(outcome)
        return outcome

    def _announce(self, outcome: Outcome) -> None:
        record = outcome.record
        fields = {
            "name": self.circuit,
            "old_state": outcome.old_state,
            "new_state": record.state,
            "reason": record.reason,
            "fail_counter": record.fail_counter,
            "fail_max": self.fail_max,
            "retry_after_s": record.wait_ms() / 1000,
        }
        self.dispatcher.emit(SupervisionEvent("circuit", fields))
        if self.listeners:
            old, new = self._create_new_state(outcome.old_state), self._create_new_state(record.state)
            for listener in self.listeners:
                self._isolated(listener.state_change, self, old, new)

    def _notify(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            self._isolated(getattr(listener, hook), self, *args)

    def _isolated(self, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            hook(*args, **kwargs)
        except Exception as exc:  # a broken pybreaker listener must not break the protected call
            log_event(logging.ERROR, "circuit-listener-failed", logger, name=self.circuit,
                      hook=getattr(hook, "__qualname__", repr(hook)), error=repr(exc)[:300])


class Guard:
    """Context manager guarding one block with a :class:`SharedBreaker` (not reentrant)."""

    def __init__(self, breaker: SharedBreaker) -> None:
        self.breaker = breaker
        self._ticket: Ticket | None = None

    def __enter__(self) -> SharedBreaker:
        self._ticket = self.breaker.admit()
        return self.breaker

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ticket, self._ticket = self._ticket or FREE, None
        if exc is None:
            self.breaker.succeeded(ticket)
        else:
            self.breaker.failed(ticket, exc)
