"""Live workers: each worker's registration, and the index the views read instead of SCAN.

| Key | Holds |
|---|---|
| ``prismatic:{<ns>}:worker:<hostname>`` | a worker's registration (JSON: pid, pool, queues, heartbeat) |
| ``prismatic:{<ns>}:workers`` | sorted set: hostname -> last heartbeat (store clock), old entries dropped |

A worker's :class:`Heartbeat` writes both every third of :func:`registration_ttl_s`, and the
registration within one ``prismatic_reconcile_interval_s`` when what the worker serves changed; both
expire after the TTL without a heartbeat, so a worker that died (or a short-lived pod name) leaves
nothing behind. Readers take the index's live hostnames, then their registrations in one MGET.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..store.base import OutageWatch

if TYPE_CHECKING:
    from ..config import Settings
    from ..store.base import Store
    from ..store.keys import Keys

__all__ = ["INDEX_CAP", "Heartbeat", "index_every_s", "live_registrations", "register_worker", "registration_ttl_s",
           "served_queues", "unregister_worker", "worker_key"]

#: Most hostnames the index keeps (the oldest heartbeats go first beyond it).
INDEX_CAP = 10_000


def worker_key(keys: Keys, hostname: str) -> str:
    """``prismatic:{<ns>}:worker:<hostname>``: a worker's registration."""
    return keys.key("worker", hostname)


def registration_ttl_s(settings: Settings) -> float:
    """How long a registration outlives its last heartbeat: five reconcile intervals, at least 10 s."""
    return max(10.0, 5 * settings.reconcile_interval_s)


def register_worker(store: Store, keys: Keys, settings: Settings, registration: Mapping[str, object], *,
                    index: bool = True) -> None:
    """Write (refresh) a worker's registration and, with ``index``, its index entry.

    The index entry lives as long as the registration, so a heartbeat refreshes it every third of that
    (:func:`index_every_s`), not at every beat.
    """
    hostname = str(registration["hostname"])
    ttl_s = registration_ttl_s(settings)
    store.set_json(worker_key(keys, hostname), dict(registration), ttl_s=ttl_s)
    if index:
        store.window_add(keys.key("workers"), hostname, store.time(), ttl_s, cap=INDEX_CAP)


def index_every_s(settings: Settings) -> float:
    """How often a heartbeat refreshes the worker's index entry: a third of the registration's TTL."""
    return registration_ttl_s(settings) / 3


class Heartbeat:
    """When a worker's beat writes its registration: when what it serves changed, else every third of the
    registration's TTL (with the index entry), and at every beat while the store is or was unreachable since the
    last write (its server may have restarted empty) until one write reaches it."""

    def __init__(self, store: Store, keys: Keys, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.keys, self.settings, self.clock = store, keys, settings, clock
        self._refreshed_at = -float("inf")
        self._written: dict[str, object] | None = None
        self._outages = OutageWatch(store)

    def beat(self, registration: Mapping[str, object]) -> bool:
        """Write ``registration`` if it is due (True when written)."""
        now, store = self.clock(), self.store
        content = {k: v for k, v in registration.items() if k != "heartbeat_at"}
        refresh = now - self._refreshed_at >= index_every_s(self.settings) or self._outages.since()
        if not refresh and content == self._written:
            return False
        register_worker(store, self.keys, self.settings, registration, index=refresh)
        self._written = content
        if refresh:
            self._refreshed_at = now
        self._outages.wrote()
        return True


def unregister_worker(store: Store, keys: Keys, hostname: str) -> None:
    """Remove a worker's registration at its shutdown (its index entry is ignored without it, then expires)."""
    store.delete(worker_key(keys, hostname))


def live_registrations(store: Store, keys: Keys, settings: Settings) -> list[dict[str, Any]]:
    """The registrations of the workers whose heartbeat is within the TTL, by hostname."""
    hostnames = sorted({m for m, _ in store.window_members(keys.key("workers"), store.time(),
                                                            registration_ttl_s(settings))})
    if not hostnames:
        return []
    found = store.get_many([worker_key(keys, h) for h in hostnames])
    return [r for r in found if isinstance(r, dict) and r.get("hostname")]


def served_queues(registrations: Iterable[Mapping[str, object]]) -> set[str]:
    """The queues at least one live worker consumes."""
    served: set[str] = set()
    for registration in registrations:
        queues = registration.get("queues")
        if isinstance(queues, (list, tuple)):
            served.update(q for q in queues if isinstance(q, str))
    return served
