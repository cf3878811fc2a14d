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

pybreaker's listeners are called one at a time per breaker and process (a lock around each
callback), in pybreaker's order: ``before_call``, then ``failure`` or ``success`` around the
``state_change`` the outcome caused. ``state_change`` is also called when this process *notices*
a change made elsewhere (a reply or a pub/sub message), as pybreaker's ``state`` getter does.

Cache and staleness: the record is cached per process and replaced by every script reply and
by each message on the events channel (see :mod:`prismatic_celery.circuits.registry`); with no
message at all it is re-read after ``cache_ttl_s``. So a state change made elsewhere is seen
within ``cache_ttl_s`` at worst (1 s by default on Redis), usually within a pub/sub delivery.

Store outage: when the store cannot run a script, the breaker goes on in this process from the
last record it knew (its times moved to this host's clock): an open circuit stays open until its
reset timeout, then this process runs at most one trial per reset timeout; failures count from
the last known counter. When the store answers again, the shared record is taken back, except
that an opening this process still holds is written to the store (it never shortens one there).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import types
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import pybreaker

from ..errors import PrismaticError
from ..log import get_logger, log_event
from ..observability.events import Dispatcher, SupervisionEvent
from ..store import MemoryStore, RedisStore, Store
from .config import CircuitSpec, Exclusion
from .storage import CLOSED, HALF_OPEN, OPEN, SCRIPT, CircuitRecord, CircuitStorage, Outcome, parse_reply

if TYPE_CHECKING:
    from .registry import Circuits

__all__ = ["DEFAULT_CACHE_TTL_S", "Allowance", "CircuitOpenError", "Guard", "SharedBreaker", "Ticket"]

T = TypeVar("T")
logger = get_logger("circuits")

#: Longest staleness of a cached record on a Redis store when no pub/sub message arrives.
DEFAULT_CACHE_TTL_S = 1.0


def default_cache_ttl(store: Store) -> float:
    """``DEFAULT_CACHE_TTL_S`` on Redis; 0 on the in-process store, where a read costs no round trip."""
    return DEFAULT_CACHE_TTL_S if isinstance(store, RedisStore) else 0.0


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


_breakers: weakref.WeakSet[SharedBreaker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for breaker in list(_breakers):
        breaker._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _guarded_block() -> None:
    """Stands for the block of ``with breaker.calling():`` in ``before_call`` listeners."""


class SharedBreaker(pybreaker.CircuitBreaker):
    """A pybreaker ``CircuitBreaker`` whose state every process shares through the store.

    It takes pybreaker's arguments, in pybreaker's order, plus where the state lives: either
    ``state_storage``, a :class:`CircuitStorage` (what a worker's registry passes), or ``store``
    (a :class:`Store` or a Redis URL) with the app's ``namespace`` (``prismatic_namespace``,
    default the Celery app's main name) and the breaker's ``name``, which is how a web process
    or a script shares a breaker with the workers::

        payments = SharedBreaker(fail_max=5, reset_timeout=30, exclude=[NotFound], name="payments",
                                 store="redis://redis:6379/0", namespace="shop")

    Built that way, it joins one registry per store and namespace in the process (one pub/sub
    listener for all such breakers). ``strict``: admit calls only while failures plus calls in
    flight stay below ``fail_max`` (see :class:`CircuitSpec`); ``call_timeout``: the lease of a
    trial or strict permit, in seconds. ``monotonic`` and ``clock`` (wall time) are injectable.

    Overridden from pybreaker, because its versions read-modify-write the storage in several
    steps: the call paths (``call``, ``calling``, ``call_async``), the forced transitions
    (``open``, ``half_open``, ``close``, the ``state`` setter), the state and counter getters
    (side-effect free here) and the limits (``fail_max``, ``reset_timeout``,
    ``success_threshold``, kept in :attr:`spec`). Listener and exclusion management, ``name``,
    ``is_system_error`` and the decorator are pybreaker's.
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
        dispatcher: Dispatcher | None = None,
        hub: Hub | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spec = CircuitSpec(
            fail_max=fail_max, reset_timeout_s=float(reset_timeout), exclude=tuple(exclude or ()),
            success_threshold=success_threshold, call_timeout_s=float(call_timeout), strict=strict,
        )
        registry: Circuits | None = None
        if state_storage is None:
            registry = self._join(store, namespace, name)
            state_storage = CircuitStorage(registry.store, registry.keys, str(name), spec=self._spec,
                                           channel=registry.channel)
            dispatcher = dispatcher or registry.dispatcher
            hub = hub or registry.hub
            cache_ttl_s = registry.cache_ttl_s if cache_ttl_s is None else cache_ttl_s
        elif not isinstance(state_storage, CircuitStorage):
            raise TypeError(f"state_storage must be a CircuitStorage, not {type(state_storage).__name__}")
        elif store is not None:
            raise TypeError("give either state_storage or store, not both")
        state_storage.spec = self._spec
        self.storage = state_storage
        self.dispatcher = dispatcher or Dispatcher()
        self.cache_ttl_s = default_cache_ttl(state_storage.store) if cache_ttl_s is None else cache_ttl_s
        self._monotonic = monotonic
        self._clock = clock
        self._hub: Hub = _NoHub()  # pybreaker's __init__ reads the state: no listener thread for that
        self._throw_on_trip = throw_new_error_on_trip
        self._cache_lock = threading.Lock()
        self._mode_lock = threading.Lock()
        self._listener_lock = threading.RLock()
        self._record: CircuitRecord | None = None
        self._read_at = -float("inf")  # when the cached record was read (reset by invalidate)
        self._seen_at = -float("inf")  # when it was received (kept: its times are converted from it)
        self._local: MemoryStore | None = None  # this process's copy while the store is unreachable
        super().__init__(
            fail_max=fail_max, reset_timeout=reset_timeout, success_threshold=success_threshold,
            exclude=list(self._spec.exclude), listeners=list(listeners or ()), state_storage=state_storage,
            name=name or state_storage.circuit, throw_new_error_on_trip=throw_new_error_on_trip,
        )
        self._hub = hub or _NoHub()
        _breakers.add(self)
        if registry is not None:
            registry.adopt(self)

    @classmethod
    def from_spec(cls, storage: CircuitStorage, spec: CircuitSpec, **options: Any) -> SharedBreaker:
        """The breaker ``spec`` declares, on ``storage`` (``options``: the keyword-only arguments)."""
        return cls(
            fail_max=spec.fail_max, reset_timeout=spec.reset_timeout_s, success_threshold=spec.success_threshold,
            exclude=spec.exclude, state_storage=storage, name=storage.circuit, strict=spec.strict,
            call_timeout=spec.call_timeout_s, **options,
        )

    @staticmethod
    def _join(store: Store | str | None, namespace: str | None, name: str | None) -> Circuits:
        if store is None:
            raise TypeError("a shared breaker needs state_storage, or store with namespace and name")
        if not namespace or not name:
            raise TypeError("a breaker built from a store needs namespace (the app's prismatic_namespace) and name")
        from .registry import connect  # the registry builds breakers: imported when first needed

        return connect(store, namespace)

    def _after_fork(self) -> None:
        """A forked child starts with fresh locks (a parent thread may have held one)."""
        self._cache_lock = threading.Lock()
        self._mode_lock = threading.Lock()
        self._listener_lock = threading.RLock()
        self._lock = threading.RLock()
        if self._local is not None:
            self._local.lock = threading.RLock()

    @property
    def circuit(self) -> str:
        """The breaker's name in the store (never None, unlike pybreaker's ``name``)."""
        return self.storage.circuit

    # limits: pybreaker's setters, kept in one spec ----------------------------------------------
    @property
    def spec(self) -> CircuitSpec:
        """The breaker's limits as they are now."""
        return self._spec

    def _respec(self, **changes: Any) -> None:
        self._spec = replace(self._spec, **changes)
        self.storage.spec = self._spec

    @property
    def fail_max(self) -> int:
        return self._spec.fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self._respec(fail_max=number)

    @property
    def reset_timeout(self) -> float:
        return self._spec.reset_timeout_s

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        self._respec(reset_timeout_s=float(timeout))

    @property
    def success_threshold(self) -> int:
        return self._spec.success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        self._respec(success_threshold=threshold)

    # the cached record -------------------------------------------------------------------------
    def remember(self, record: CircuitRecord, *, read_at: float | None = None, newer_only: bool = False,
                 force: bool = False, notice: bool = True) -> bool:
        """Cache ``record`` unless the cached one is newer (higher ``seq``); True when taken.

        A record with ``seq`` 0 (the hash is absent: deleted by an operator) always replaces, and
        so does any with ``force``. A state different from the cached one is a change this process
        noticed: pybreaker's ``state_change`` listeners hear of it (unless ``notice`` is False).
        """
        now = self._monotonic()
        at = now if read_at is None else read_at
        with self._cache_lock:
            cached = self._record
            stale = cached is not None and (record.seq < cached.seq or (newer_only and record.seq == cached.seq))
            if stale and record.seq != 0 and not force:
                return False
            self._record, self._read_at, self._seen_at = record, at, now
        if notice and cached is not None and cached.state != record.state:
            self._state_changed(cached.state, record.state)
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
            fresh = self._observe(self._run("read"), read_at=now).record
            with self._cache_lock:
                record, read_at = self._record, self._read_at
            if record is None or read_at == -float("inf"):  # invalidated meanwhile: this read is the news
                record, read_at = fresh, now
        return record, record.now_ms + int((now - read_at) * 1000)

    def record(self) -> CircuitRecord:
        """The shared record, read from the store now (one round trip; this process's copy during an outage)."""
        return self._observe(self._run("read")).record

    @property
    def shared(self) -> bool:
        """False while the store is unreachable and this process decides alone."""
        return self._local is None

    # pybreaker's state surface, side-effect free ----------------------------------------------
    @property
    def current_state(self) -> str:
        """The state as this process knows it (bounded staleness, see the module docstring)."""
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
        return self._throw_on_trip

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
            with self._cache_lock:
                cached = self._record
            if cached is None or cached.state != CLOSED or cached.fail_counter == 0:
                self._notify("success")
                return
        self._observe(self._run("success", token=ticket.token))
        self._notify("success")

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
        self._notify("failure", exc)
        self._observe(outcome)
        if outcome.verdict == "opened" and self._throw_on_trip:
            why = "trial call failed" if outcome.old_state == HALF_OPEN else "failure threshold reached"
            raise self._refusal(outcome.record, outcome.record.wait_ms(), f"opened: {why}") from exc

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` under the breaker (no lock is held while it runs).

        A generator is settled when it is exhausted (success) or raises (failure), as pybreaker does.
        """
        ticket = self.admit()
        self._notify("before_call", func, *args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self.failed(ticket, exc)
            raise
        if isinstance(result, types.GeneratorType):
            return cast(T, self._settle_generator(ticket, result))
        self.succeeded(ticket)
        return result

    def _settle_generator(self, ticket: Ticket, generator: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        try:
            result = yield from generator
        except BaseException as exc:
            self.failed(ticket, exc)
            raise
        self.succeeded(ticket)
        return result

    def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """pybreaker's Tornado call, on the same atomic path as :meth:`call` (needs tornado)."""
        if not pybreaker.HAS_TORNADO_SUPPORT:
            raise ImportError("No module named tornado")
        from tornado import gen

        @gen.coroutine
        def wrapped() -> Any:
            ticket = self.admit()
            self._notify("before_call", func, *args, **kwargs)
            try:
                result = yield func(*args, **kwargs)
            except BaseException as exc:
                self.failed(ticket, exc)
                raise
            if isinstance(result, types.GeneratorType):
                return self._settle_generator(ticket, result)
            self.succeeded(ticket)
            return result

        return wrapped()

    def calling(self) -> Guard:  # type: ignore[override]  # a plain context manager, not a generator one
        """``with breaker.calling(): ...`` guards the block."""
        return Guard(self)

    def guard(self) -> Guard:
        """Same as :meth:`calling`."""
        return Guard(self)

    # the store, or this process's copy while it is unreachable ---------------------------------
    def _run(self, op: str, *, token: str = "", amount_ms: int = 0, target: str = "", reason: str = "") -> Outcome:
        """One script run on the store; on this process's copy of the record while the store is unreachable."""
        options: dict[str, Any] = {"token": token, "amount_ms": amount_ms, "target": target, "reason": reason}
        if self._local is not None:
            probe = self.storage.apply("read", self._spec)
            if not probe.shared:
                return self._run_locally(op, options)
            self._reconcile(probe)
        outcome = self.storage.apply(op, self._spec, **options)
        if outcome.shared:
            return outcome
        self._go_local()
        return self._run_locally(op, options)

    def _run_locally(self, op: str, options: dict[str, Any]) -> Outcome:
        local = self._local
        if local is None:  # the store answered again meanwhile
            return self.storage.apply(op, self._spec, **options)
        reply = local.run(SCRIPT, [self.storage.key], self.storage.arguments(op, self._spec, **options))
        return replace(parse_reply(self.circuit, reply), shared=False)

    def _go_local(self) -> None:
        """The store is unreachable: go on from the last known record, moved to this host's clock."""
        with self._mode_lock:
            if self._local is not None:
                return
            local = MemoryStore(clock=self._clock)
            with self._cache_lock:
                known, seen_at = self._record, self._seen_at
            if known is not None:
                shift = int(self._clock() * 1000) - (known.now_ms + int((self._monotonic() - seen_at) * 1000))
                local.set_raw(self.storage.key, {
                    "state": known.state, "fail_counter": str(known.fail_counter),
                    "success_counter": str(known.success_counter), "reason": known.reason, "seq": str(known.seq),
                    "opened_at_ms": str(known.opened_at_ms + shift if known.opened_at_ms else 0),
                    "open_until_ms": str(known.open_until_ms + shift if known.open_until_ms else 0),
                })
            self._local = local
        log_event(logging.WARNING, "circuit-store-unreachable", logger, name=self.circuit,
                  state=known.state if known is not None else "unknown (closed)",
                  fallback="this process decides alone from the last state it knew until the store answers")

    def _reconcile(self, shared: Outcome) -> None:
        """The store answers again: take its record back, writing back an opening this process still holds."""
        pushed: Outcome | None = None
        with self._mode_lock:
            local = self._local
            if local is None:
                return
            reply = local.run(SCRIPT, [self.storage.key], self.storage.arguments("read", self._spec))
            mine = parse_reply(self.circuit, reply).record
            left_ms = mine.wait_ms() if mine.state == OPEN else 0
            theirs = shared.record.wait_ms() if shared.record.state == OPEN else 0
            if left_ms > theirs:
                pushed = self.storage.apply("force", self._spec, target=OPEN, amount_ms=left_ms, reason="store-outage")
                if not pushed.shared:  # gone again: stay on this process's copy
                    return
            self._local = None
            self.remember((pushed or shared).record, force=True, notice=False)
        if pushed is not None:
            self._observe(pushed, forced=True)
        log_event(logging.WARNING, "circuit-store-reachable", logger, name=self.circuit, local_state=mine.state,
                  shared_state=(pushed or shared).record.state, wrote_back_opening_ms=left_ms if pushed else 0)

    # bookkeeping -------------------------------------------------------------------------------
    def _refusal(self, record: CircuitRecord, wait_ms: int, what: str) -> CircuitOpenError:
        return CircuitOpenError(self.circuit, record.state, max(0, wait_ms) / 1000, what)

    def _observe(self, outcome: Outcome, *, read_at: float | None = None, forced: bool = False) -> Outcome:
        self.remember(outcome.record, read_at=read_at, notice=not forced)
        if forced:  # pybreaker tells its listeners of every forced transition, even to the same state
            self._state_changed(outcome.old_state, outcome.record.state)
        if outcome.transitioned or (forced and outcome.changed):
            self._announce(outcome)
        return outcome

    def _announce(self, outcome: Outcome) -> None:
        """The supervision event, once cluster-wide: by the process whose script made the change."""
        record = outcome.record
        self.dispatcher.emit(SupervisionEvent("circuit", {
            "name": self.circuit,
            "old_state": outcome.old_state,
            "new_state": record.state,
            "reason": record.reason,
            "fail_counter": record.fail_counter,
            "fail_max": self.fail_max,
            "retry_after_s": record.wait_ms() / 1000,
        }))

    def _state_changed(self, old: str, new: str) -> None:
        if self.listeners:
            self._notify("state_change", self._create_new_state(old), self._create_new_state(new))

    def _notify(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook`` on every pybreaker listener, one callback at a time per breaker in this process."""
        listeners = self.listeners
        if not listeners:
            return
        with self._listener_lock:
            for listener in listeners:
                try:
                    getattr(listener, hook)(self, *args, **kwargs)
                except Exception as exc:  # a broken pybreaker listener must not break the protected call
                    log_event(logging.ERROR, "circuit-listener-failed", logger, name=self.circuit,
                              hook=f"{type(listener).__name__}.{hook}", error=repr(exc)[:300])


class Guard:
    """Context manager guarding one block with a :class:`SharedBreaker` (not reentrant)."""

    def __init__(self, breaker: SharedBreaker) -> None:
        self.breaker = breaker
        self._ticket: Ticket | None = None

    def __enter__(self) -> SharedBreaker:
        self._ticket = self.breaker.admit()
        self.breaker._notify("before_call", _guarded_block)
        return self.breaker

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ticket, self._ticket = self._ticket or FREE, None
        if exc is None:
            self.breaker.succeeded(ticket)
        else:
            self.breaker.failed(ticket, exc)
