"""Per-process view of pause records, refreshed at most once per reconcile period.

Lets a process decide "is this queue paused?" with a dictionary lookup; the
store is read at most once per ``prismatic_reconcile_interval_s`` per process,
never once per task.

In a worker, the main process's reconciler reads every pause once per period anyway: it shares each snapshot
with the pool processes through a :class:`PauseFeed` (anonymous shared memory made before the pool forks), so a
pool process takes its view from there, twice per period, instead of reading the store itself. A process reads
the store as before when the feed is stale (the reconciler stopped, or its store is unreachable), when its own
store is degraded (its in-memory pauses are its own), and right after it changed a pause itself
(:meth:`PauseCache.invalidate`: the feed may predate the change).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mmap
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..log import get_logger, log_event
from ..store import Store, encode_json
from ..store.keys import Keys
from ..store.view import PeriodicView
from .pauses import Pause, read_pauses
from .tree import Supervisor

__all__ = ["FEED_BYTES", "PauseCache", "PauseFeed"]

logger = get_logger("reconcile")

FEED_BYTES = 256 * 1024
"""Room for a snapshot (a pause record takes about 150 bytes of JSON): a larger one is not shared."""
_HEADER = struct.Struct("<QdI")  # sequence (odd while being written), when the snapshot was read, payload length


class PauseFeed:
    """The pause snapshot of a worker's main process, shared with its pool processes.

    One writer (the reconciler's thread), any number of readers; a sequence number that is odd while a snapshot
    is written lets a reader detect a torn read (it then reads the store instead).
    """

    def __init__(self, size: int = FEED_BYTES, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._map = mmap.mmap(-1, size)
        self._lock = threading.Lock()
        self._too_large = False

    def publish(self, pauses: Mapping[str, Pause], read_at: float) -> bool:
        """Share ``pauses``, read from the store at ``read_at`` (``clock`` time); False when it does not fit."""
        data = encode_json({q: {**p.to_json(), "causes": list(p.causes)} for q, p in pauses.items()}).encode()
        if _HEADER.size + len(data) > self.size:
            if not self._too_large:
                self._too_large = True
                log_event(logging.WARNING, "pause-feed-full", logger, bytes=len(data), room=self.size,
                          detail="pool processes read the pauses from the store themselves")
            return False
        with self._lock:
            seq = _HEADER.unpack_from(self._map)[0]
            self._map[:8] = (seq + 1).to_bytes(8, "little")  # odd: being written
            self._map[_HEADER.size:_HEADER.size + len(data)] = data
            _HEADER.pack_into(self._map, 0, seq + 2, read_at, len(data))
        return True

    def read(self, max_age_s: float) -> tuple[dict[str, Pause], float] | None:
        """The shared snapshot and when it was read; None when none was read within ``max_age_s`` (or a write
        was under way)."""
        seq, read_at, length = _HEADER.unpack_from(self._map)
        if seq == 0 or seq % 2 or self.clock() - read_at > max_age_s:
            return None
        data = self._map[_HEADER.size:_HEADER.size + length]
        if _HEADER.unpack_from(self._map)[0] != seq:
            return None
        try:
            records = json.loads(bytes(data))
            pauses = {q: _pause(q, record) for q, record in records.items()}
        except (ValueError, TypeError, AttributeError):  # a torn write the sequence did not show: read the store
            return None
        return {q: p for q, p in pauses.items() if p is not None}, read_at


def _pause(queue: str, record: dict[str, object]) -> Pause | None:
    pause = Pause.from_json(queue, record)
    causes = record.get("causes")
    if pause is None or not isinstance(causes, list):
        return pause
    return dataclasses.replace(pause, causes=tuple(str(c) for c in causes))


class PauseCache(PeriodicView[Pause]):
    """The pauses of ``queues``, at most ``max_age_s`` old."""

    def __init__(self, store: Store, keys: Keys, queues: Sequence[str], *, max_age_s: float, supervisor: Supervisor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(store, keys, queues, max_age_s=max_age_s, clock=clock)
        self.supervisor = supervisor
        self.feed: PauseFeed | None = None
        self._feed_max_age_s = 0.0
        self._own_read = False
        self._own_read_at = -float("inf")

    def follow(self, feed: PauseFeed) -> None:
        """Take the view from ``feed`` (a worker's pool process), twice per period, while it is fresh: read at
        most two periods ago."""
        self._feed_max_age_s = 2 * self.max_age_s
        self.max_age_s /= 2
        self.feed = feed

    def read(self) -> dict[str, Pause]:
        feed = self.feed
        if feed is not None and not self._own_read and not getattr(self.store, "degraded", False):
            shared = feed.read(self._feed_max_age_s)
            if shared is not None and shared[1] >= self._own_read_at:  # never older than this process's own read
                return {q: p for q, p in shared[0].items() if q in self.queues}
        self._own_read = False
        self._own_read_at = self.clock()
        return read_pauses(self.store, self.keys, self.supervisor, self.queues)

    def invalidate(self) -> None:
        """Read the store itself on the next lookup (this process changed a pause: the feed may not show it yet)."""
        self._own_read = True
        super().invalidate()

    def get(self, queue: str) -> Pause | None:
        """The live pause of ``queue``, if any (refreshing the view when it is stale)."""
        pause = self.current().get(queue)
        if pause is not None and pause.until <= time.time():
            return None
        return pause
