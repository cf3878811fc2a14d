"""The per-app registry of shared breakers: declared by name, guarding calls, forced by remediation.

It builds on a :class:`~prismatic_celery.circuits.hub.Hub` (the store, the namespace's keys, the events
channel and the listener that keeps every cached record fresh: the staleness bound is described there).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from ..errors import PrismaticError
from ..store import Store
from ..store.keys import Keys
from .breaker import SharedBreaker
from .calls import Allowance
from .config import CircuitSpec
from .events import EventSink
from .hub import Hub, indexed_circuits, join
from .record import CircuitRecord
from .storage import CircuitStorage

__all__ = ["Circuits", "UnknownCircuitError", "connect", "indexed_circuits"]

P = ParamSpec("P")
R = TypeVar("R")


class UnknownCircuitError(PrismaticError, LookupError):
    """No breaker of that name was declared."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        super().__init__(f"unknown circuit {name!r}; declared: {', '.join(known) or '(none)'}")


class Circuits:
    """Every declared breaker of one app, sharing one store, one namespace and one event sink.

    ``specs`` declares breakers up front (e.g. from ``parse_circuits``); :meth:`declare` adds
    more. Names that were never declared raise :class:`UnknownCircuitError`. ``events`` takes every
    state change (anything with ``emit(event)``, e.g. the runtime's dispatcher; default: logged);
    ``cache_ttl_s`` is the staleness bound (see :mod:`.hub`); ``listen=False`` disables the pub/sub
    listener; ``monotonic`` and ``clock`` (wall time, used while the store is unreachable) are injectable.
    """

    def __init__(
        self,
        store: Store,
        keys: Keys,
        events: EventSink | None = None,
        *,
        specs: Mapping[str, CircuitSpec] | None = None,
        cache_ttl_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        listen: bool = True,
    ) -> None:
        self.hub = Hub(store, keys, events, cache_ttl_s=cache_ttl_s, listen=listen)
        self._monotonic = monotonic
        self._clock = clock
        for name, spec in (specs or {}).items():
            self.declare(name, spec)

    @classmethod
    def on(cls, hub: Hub) -> Circuits:
        """The registry of the breakers ``hub`` already holds (those built from a store join one)."""
        circuits = cls.__new__(cls)
        circuits.hub, circuits._monotonic, circuits._clock = hub, time.monotonic, time.time
        return circuits

    @property
    def store(self) -> Store:
        """The store every breaker's record lives in."""
        return self.hub.store

    @property
    def keys(self) -> Keys:
        """The app's namespace."""
        return self.hub.keys

    @property
    def channel(self) -> str:
        """The events channel every change is published on."""
        return self.hub.channel

    @property
    def cache_ttl_s(self) -> float:
        """The staleness bound of every cached record."""
        return self.hub.cache_ttl_s

    # declaring and finding ---------------------------------------------------------------------
    def declare(self, name: str, spec: CircuitSpec | None = None) -> SharedBreaker:
        """Declare (or re-declare with a new spec) the breaker ``name``."""
        spec = spec or CircuitSpec()
        hub = self.hub
        storage = CircuitStorage(hub.store, hub.keys, name, spec=spec, channel=hub.channel)
        breaker = SharedBreaker.from_spec(storage, spec, events=hub.events, cache_ttl_s=hub.cache_ttl_s,
                                          monotonic=self._monotonic, clock=self._clock, sync=hub.sync)
        return self.adopt(breaker)

    def adopt(self, breaker: SharedBreaker) -> SharedBreaker:
        """Keep ``breaker`` under its name (see :meth:`Hub.adopt`)."""
        self.hub.adopt(breaker)
        return breaker

    @property
    def breakers(self) -> dict[str, SharedBreaker]:
        """Every declared breaker by name (a copy)."""
        return {name: b for name, b in list(self.hub.members.items()) if isinstance(b, SharedBreaker)}

    @property
    def names(self) -> tuple[str, ...]:
        """Declared breaker names, sorted."""
        return tuple(sorted(self.breakers))

    def get(self, name: str) -> SharedBreaker:
        """The breaker ``name``; :class:`UnknownCircuitError` if it was never declared."""
        breaker = self.hub.members.get(name)
        if not isinstance(breaker, SharedBreaker):
            raise UnknownCircuitError(name, self.names) from None
        return breaker

    def __contains__(self, name: object) -> bool:
        return name in self.hub.members

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

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every declared breaker's shared record and spec, read now, JSON-ready."""
        return {
            name: {**breaker.record().describe(), **breaker.spec.describe()}
            for name, breaker in sorted(self.breakers.items())
        }

    def invalidate_all(self) -> None:
        """Drop every cached record (the next look at each breaker reads the store)."""
        self.hub.invalidate_all()

    @property
    def listening(self) -> bool:
        """True while the pub/sub listener is subscribed in this process."""
        return self.hub.listening

    def start(self, *, wait_s: float = 0.0) -> bool:
        """Start the listener now (it also starts on first use); optionally wait until subscribed."""
        return self.hub.start(wait_s=wait_s)

    def stop(self, *, timeout_s: float = 0.0) -> None:
        """Stop the listener thread (caches then rely on ``cache_ttl_s`` alone); wait up to ``timeout_s``."""
        self.hub.stop(timeout_s=timeout_s)


_connected: dict[int, Circuits] = {}
_connect_lock = threading.Lock()


def connect(store: Store | str, namespace: str) -> Circuits:
    """This process's registry for ``store`` (a :class:`Store` or a URL) and ``namespace``, made once.

    It holds the breakers a :class:`SharedBreaker` built from a store outside a worker joined: the breakers
    built for one store and namespace share its pub/sub listener.
    """
    hub = join(store, namespace)
    with _connect_lock:
        registry = _connected.get(id(hub))
        if registry is None:
            registry = _connected[id(hub)] = Circuits.on(hub)
        return registry
