"""One store and namespace's circuits in a process: the store, the keys, the events channel and its listener.

Staleness bound: a process re-reads a breaker's record at least every ``cache_ttl_s``
(default 1 s on a Redis store, 0 on the in-process store, where reads cost no round trip),
even if no message arrives. Every change made by any process is also published on
``prismatic:{<ns>}:circuit-events`` and applied by each process's listener thread as soon as it
is delivered, so the bound is only reached when pub/sub is down. After a (re)subscription or
a fork, every cached record is dropped, since messages may have been missed.

A :class:`Hub` knows its breakers only as :class:`Member` (what the listener needs of them), so the
breakers (:mod:`.breaker`) and the registry (:mod:`.registry`) both build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from ..log import RateLimitedWarning, get_logger, log_event
from ..store import STORE_ERRORS, RedisStore, Store, open_store
from ..store.keys import Keys
from .events import EventSink, LoggedEvents
from .record import CircuitRecord, parse_message

__all__ = [
    "DEFAULT_CACHE_TTL_S", "INDEX_CAP", "INDEX_S", "Hub", "Member", "Sync", "default_cache_ttl", "indexed_circuits",
    "join",
]

logger = get_logger("circuits")

POLL_S = 0.2
#: Longest staleness of a cached record on a Redis store when no pub/sub message arrives.
DEFAULT_CACHE_TTL_S = 1.0
#: How long a circuit stays in the namespace's index after the last process declared it (seconds).
INDEX_S = 30 * 24 * 3600.0
#: Most circuit names the index keeps.
INDEX_CAP = 10_000


def default_cache_ttl(store: Store) -> float:
    """``DEFAULT_CACHE_TTL_S`` on Redis; 0 on the in-process store, where a read costs no round trip."""
    return DEFAULT_CACHE_TTL_S if isinstance(store, RedisStore) else 0.0


def indexed_circuits(store: Store, keys: Keys) -> list[str]:
    """Every circuit some process declared within :data:`INDEX_S` (the index the views read, never a SCAN)."""
    return sorted(name for name, _ in store.window_members(keys.key("circuits"), time.time(), INDEX_S))


class Member(Protocol):
    """What a hub needs of a breaker to keep its cached record fresh."""

    @property
    def circuit(self) -> str:
        """The breaker's name in the store."""

    def remember(self, record: CircuitRecord, *, newer_only: bool = False) -> bool:
        """Cache ``record`` unless the cached one is newer."""

    def invalidate(self) -> None:
        """Forget the cached record."""


class Sync(Protocol):
    """Keeps a breaker's cache in sync (a hub's pub/sub listener)."""

    def ensure_listening(self) -> None:
        """Called before each cache read: start listening in this process if needed."""


_listeners: weakref.WeakSet[_Listener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for listener in list(_listeners):
        listener._start_lock = threading.Lock()  # a parent thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Listener:
    """A daemon thread subscribed to the events channel of a :class:`RedisStore`.

    Restarted lazily in a forked child (threads do not survive ``fork``). An error of any kind ends
    the subscription; it is retried after ``retry_s`` and every cache is dropped meanwhile.
    """

    def __init__(self, store: RedisStore, channel: str, hub: Hub, *, retry_s: float = 1.0) -> None:
        self.store = store
        self.channel = channel
        self.hub = hub
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
            self.hub.invalidate_all()
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
                self.hub.invalidate_all()
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_S)
                    if message and message.get("type") == "message":
                        self._deliver(message.get("data"))
            except Exception as exc:  # RedisError, RedisClusterException, or redis-py's errors on a closed connection
                self.subscribed.clear()
                self.hub.invalidate_all()
                if self._stop.is_set():  # the store was closed under us while stopping
                    break
                self._warning.warn("circuit-events-unavailable", channel=self.channel, error=repr(exc)[:200],
                                   fallback=f"cached states re-read every {self.hub.cache_ttl_s}s")
                self._stop.wait(self.retry_s)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*STORE_ERRORS, OSError):  # closing a broken connection
                        pubsub.close()
        self.subscribed.clear()

    def _deliver(self, data: object) -> None:
        record = parse_message(data) if isinstance(data, (str, bytes)) else None
        if record is None:
            log_event(logging.WARNING, "circuit-event-corrupt", logger, channel=self.channel, data=repr(data)[:200])
            return
        member = self.hub.members.get(record.name)
        if member is not None:
            member.remember(record, newer_only=True)


class Hub:
    """The breakers of one store and namespace in this process, kept fresh by one pub/sub listener.

    ``events`` takes every state change a breaker made (default: logged); ``cache_ttl_s`` is the
    staleness bound (module docstring); ``listen=False`` disables the listener.
    """

    def __init__(self, store: Store, keys: Keys, events: EventSink | None = None, *,
                 cache_ttl_s: float | None = None, listen: bool = True) -> None:
        self.store = store
        self.keys = keys
        self.events: EventSink = events or LoggedEvents()
        self.channel = keys.key("circuit-events")
        self.cache_ttl_s = default_cache_ttl(store) if cache_ttl_s is None else cache_ttl_s
        self.members: dict[str, Member] = {}
        self._lock = threading.Lock()
        self._listener = _Listener(store, self.channel, self) if listen and isinstance(store, RedisStore) else None

    @property
    def sync(self) -> Sync | None:
        """What keeps the breakers in sync (None: ``cache_ttl_s`` alone)."""
        return self._listener

    def adopt(self, member: Member) -> None:
        """Keep ``member`` under its name: the listener keeps its cache fresh (it replaces one of that name).

        The name joins the namespace's index of circuits (``prismatic:{<ns>}:circuits``, refreshed by every
        process that declares it, dropped :data:`INDEX_S` after the last), which the views read instead of a SCAN.
        """
        with self._lock:
            self.members[member.circuit] = member
        self.store.window_add(self.keys.key("circuits"), member.circuit, time.time(), INDEX_S, cap=INDEX_CAP)

    def invalidate_all(self) -> None:
        """Drop every cached record (the next look at each breaker reads the store)."""
        for member in list(self.members.values()):
            member.invalidate()

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


_joined: dict[tuple[object, str], Hub] = {}
_join_lock = threading.Lock()


def join(store: Store | str, namespace: str, make: Callable[[Store, Keys], Hub] = Hub) -> Hub:
    """This process's hub for ``store`` (a :class:`Store` or a URL) and ``namespace``, made once (by ``make``).

    It is what a breaker built from a store outside a worker joins: the breakers built for one store and
    namespace share its pub/sub listener.
    """
    identity: object = store if isinstance(store, str) else id(store)
    with _join_lock:
        hub = _joined.get((identity, namespace))
        if hub is None:
            keys = Keys(namespace)
            hub = make(open_store(store, home_key=keys.key("events")) if isinstance(store, str) else store, keys)
            _joined[(identity, namespace)] = hub
        return hub
