"""The per-app registry of shared breakers, and the listener that keeps their caches fresh.

Staleness bound: a process re-reads a breaker's record at least every ``cache_ttl_s``
(default 1 s on a Redis store, 0 on the in-process store, where reads cost no round trip),
even if no message arrives. Every change made by any process is also published on
``prismatic:{<ns>}:circuit-events`` and applied by each process's listener thread as soon as it
is delivered, so the bound is only reached when pub/sub is down. After a (re)subscription or
a fork, every cached record is dropped, since messages may have been missed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from ..errors import PrismaticError
from ..log import RateLimitedWarning, get_logger, log_event
from ..observability.events import Dispatcher, LogListener
from ..store import STORE_ERRORS, RedisStore, Store, open_store
from ..store.keys import Keys
from .breaker import Allowance, Hub, SharedBreaker, default_cache_ttl
from .config import CircuitSpec
from .storage import CircuitRecord, CircuitStorage, parse_message

__all__ = ["Circuits", "UnknownCircuitError", "connect"]

P = ParamSpec("P")
R = TypeVar("R")
logger = get_logger("circuits")

POLL_S = 0.2


class UnknownCircuitError(PrismaticError, LookupError):
    """No breaker of that name was declared."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        super().__init__(f"unknown circuit {name!r}; declared: {', '.join(known) or '(none)'}")


_listeners: weakref.WeakSet[_Listener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for listener in list(_listeners):
        listener._start_lock = threading.Lock()  # a parent thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Listener:
    """A daemon thread subscribed to the events channel of a :class:`RedisStore`.

    Restarted lazily in a forked child (threads do not survive ``fork``). Any error ends
    the subscription; it is retried after ``retry_s`` and every cache is dropped meanwhile.
    """

    def __init__(self, store: RedisStore, channel: str, circuits: Circuits, *, retry_s: float = 1.0) -> None:
        self.store = store
        self.channel = channel
        self.circuits = circuits
        self.retry_s = retry_s
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._warning = RateLimitedWarning()
        _listeners.add(self)

    def ensure_listening(self) -> None:
        """Start the thread in this process if it is not running (cheap when it is)."""
        if self._pid == os.getpid() or self._stop.is_set():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.subscribed.clear()
            self.circuits.invalidate_all()
            self._thread = threading.Thread(target=self._run, name=f"prismatic-circuits:{self.channel}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 0.0) -> None:
        """Stop listening; the thread ends within ``POLL_S``, waited for up to ``timeout_s``."""
        self._stop.set()
        thread = self._thread
        if timeout_s > 0 and thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # redis-py leaves pubsub() unannotated
                pubsub.subscribe(self.channel)
                self.circuits.invalidate_all()
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_S)
                    if message and message.get("type") == "message":
                        self._deliver(message.get("data"))
            except Exception as exc:  # RedisError, RedisClusterException, or redis-py's errors on a closed connection
                self.subscribed.clear()
                self.circuits.invalidate_all()
                if self._stop.is_set():  # the store was closed under us while stopping
                    break
                self._warning.warn("circuit-events-unavailable", channel=self.channel, error=repr(exc)[:200],
                                   fallback=f"cached states re-read every {self.circuits.cache_ttl_s}s")
                self._stop.wait(self.retry_s)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*STORE_ERRORS, OSError):  # closing a broken connection
                        pubsub.close()
        self.subscribed.clear()

    def _deliver(self, data: Any) -> None:
        record = parse_message(data) if isinstance(data, (str, bytes)) else None
        if record is None:
            log_event(logging.WARNING, "circuit-event-corrupt", logger, channel=self.channel, data=repr(data)[:200])
            return
        breaker = self.circuits.breakers.get(record.name)
        if breaker is not None:
            breaker.remember(record, newer_only=True)


#: How long a circuit stays in the namespace's index after the last process declared it (seconds).
INDEX_S = 30 * 24 * 3600.0
#: Most circuit names the index keeps.
INDEX_CAP = 10_000


def indexed_circuits(store: Store, keys: Keys) -> list[str]:
    """Every circuit some process declared within :data:`INDEX_S` (the index the views read, never a SCAN)."""
    return sorted(name for name, _ in store.window_members(keys.key("circuits"), time.time(), INDEX_S))


class Circuits:
    """Every declared breaker of one app, sharing one store, one namespace and one dispatcher.

    ``specs`` declares breakers up front (e.g. from ``parse_circuits``); :meth:`declare` adds
    more. Names that were never declared raise :class:`UnknownCircuitError`. ``cache_ttl_s``
    is the staleness bound (module docstring); ``listen=False`` disables the pub/sub listener;
    ``monotonic`` and ``clock`` (wall time, used while the store is unreachable) are injectable.
    """

    def __init__(
        self,
        store: Store,
        keys: Keys,
        dispatcher: Dispatcher | None = None,
        *,
        specs: Mapping[str, CircuitSpec] | None = None,
        cache_ttl_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        listen: bool = True,
    ) -> None:
        self.store = store
        self.keys = keys
        self.dispatcher = dispatcher or Dispatcher([LogListener()])  # state changes are logged by the listener
        self.channel = keys.key("circuit-events")
        self.cache_ttl_s = default_cache_ttl(store) if cache_ttl_s is None else cache_ttl_s
        self._monotonic = monotonic
        self._clock = clock
        self.breakers: dict[str, SharedBreaker] = {}
        self._lock = threading.Lock()
        self._listener = _Listener(store, self.channel, self) if listen and isinstance(store, RedisStore) else None
        for name, spec in (specs or {}).items():
            self.declare(name, spec)

    # declaring and finding ---------------------------------------------------------------------
    def declare(self, name: str, spec: CircuitSpec | None = None) -> SharedBreaker:
        """Declare (or re-declare with a new spec) the breaker ``name``."""
        spec = spec or CircuitSpec()
        storage = CircuitStorage(self.store, self.keys, name, spec=spec, channel=self.channel)
        breaker = SharedBreaker.from_spec(storage, spec, dispatcher=self.dispatcher, cache_ttl_s=self.cache_ttl_s,
                                          monotonic=self._monotonic, clock=self._clock, hub=self._listener)
        return self.adopt(breaker)

    def adopt(self, breaker: SharedBreaker) -> SharedBreaker:
        """Keep ``breaker`` under its name: the listener keeps its cache fresh (it replaces one of that name).

        The name joins the namespace's index of circuits (``prismatic:{<ns>}:circuits``, refreshed by every
        process that declares it, dropped :data:`INDEX_S` after the last), which the views read instead of a SCAN.
        """
        with self._lock:
            self.breakers[breaker.circuit] = breaker
        self.store.window_add(self.keys.key("circuits"), breaker.circuit, time.time(), INDEX_S, cap=INDEX_CAP)
        return breaker

    @property
    def hub(self) -> Hub | None:
        """What keeps this registry's breakers in sync (None: ``cache_ttl_s`` alone)."""
        return self._listener

    @property
    def names(self) -> tuple[str, ...]:
        """Declared breaker names, sorted."""
        return tuple(sorted(self.breakers))

    def get(self, name: str) -> SharedBreaker:
        """The breaker ``name``; :class:`UnknownCircuitError` if it was never declared."""
        try:
            return self.breakers[name]
        except KeyError:
            raise UnknownCircuitError(name, self.names) from None

    def __contains__(self, name: object) -> bool:
        return name in self.breakers

    # guarding calls ----------------------------------------------------------------------------
    @contextmanager
    def guard(self, name: str) -> Iterator[SharedBreaker]:
        """``with circuits.guard("payments"): call()``; raises ``CircuitOpenError`` instead of calling."""
        with self.get(name).guard() as breaker:
            yield breaker

    def protect(self, name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator form of :meth:`guard`; the name is resolved at call time."""

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                return self.get(name).call(func, *args, **kwargs)

            return wrapper

        return decorate

    # remediation and introspection -------------------------------------------------------------
    def open_for(self, name: str, duration_ms: int) -> CircuitRecord:
        """Force ``name`` open for ``duration_ms`` (the ``circuit_break`` remediation), cluster-wide."""
        if duration_ms <= 0:
            raise ValueError(f"duration_ms must be > 0, got {duration_ms}")
        return self.get(name).open_for(duration_ms)

    def reset(self, name: str) -> CircuitRecord:
        """Force ``name`` closed with its counters at zero (an operator's reset)."""
        breaker = self.get(name)
        breaker.close()
        return breaker.record()

    def state(self, name: str) -> str:
        """``closed``, ``open`` or ``half-open``, as this process knows it (bounded staleness)."""
        return self.get(name).current_state

    def allows(self, name: str) -> Allowance:
        """Whether a call is allowed now, else ``retry_after_s`` until it may half-open."""
        return self.get(name).allows()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every declared breaker's shared record and spec, read now, JSON-ready."""
        return {
            name: {**breaker.record().describe(), **breaker.spec.describe()}
            for name, breaker in sorted(self.breakers.items())
        }

    def invalidate_all(self) -> None:
        """Drop every cached record (the next look at each breaker reads the store)."""
        for breaker in list(self.breakers.values()):
            breaker.invalidate()

    @property
    def listening(self) -> bool:
        """True while the pub/sub listener is subscribed in this process."""
        return self._listener is not None and self._listener.subscribed.is_set()

    def start(self, *, wait_s: float = 0.0) -> bool:
        """Start the listener now (it also starts on first use); optionally wait until subscribed."""
        if self._listener is None:
            return False
        self._listener.ensure_listening()
        return self._listener.subscribed.wait(wait_s) if wait_s > 0 else self.listening

    def stop(self, *, timeout_s: float = 0.0) -> None:
        """Stop the listener thread (caches then rely on ``cache_ttl_s`` alone); wait up to ``timeout_s``."""
        if self._listener is not None:
            self._listener.stop(timeout_s)


_connected: dict[tuple[object, str], Circuits] = {}
_connect_lock = threading.Lock()


def connect(store: Store | str, namespace: str) -> Circuits:
    """This process's registry for ``store`` (a :class:`Store` or a URL) and ``namespace``, made once.

    It is what :class:`SharedBreaker` joins when built from a store outside a worker: the breakers
    built for one store and namespace share its pub/sub listener.
    """
    identity: object = store if isinstance(store, str) else id(store)
    with _connect_lock:
        registry = _connected.get((identity, namespace))
        if registry is None:
            keys = Keys(namespace)
            registry = Circuits(open_store(store, home_key=keys.key("events")) if isinstance(store, str) else store,
                                keys)
            _connected[(identity, namespace)] = registry
        return registry
