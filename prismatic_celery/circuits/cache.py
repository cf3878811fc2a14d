"""A breaker's record as this process last saw it: replaced by every script reply and pub/sub message.

With no message at all it is re-read after ``cache_ttl_s`` (the staleness bound of :mod:`.hub`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .record import CircuitRecord

__all__ = ["RecordCache"]

NEVER = -float("inf")


class RecordCache:
    """One breaker's cached record, when it was read (reset by :meth:`invalidate`) and when it was received."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._record: CircuitRecord | None = None
        self._read_at = NEVER  # when the cached record was read (reset by invalidate)
        self._seen_at = NEVER  # when it was received (kept: its times are converted from it)

    def after_fork(self) -> None:
        """A forked child starts with a fresh lock (a parent thread may have held it)."""
        self._lock = threading.Lock()

    def take(self, record: CircuitRecord, *, read_at: float | None = None, newer_only: bool = False,
             force: bool = False) -> tuple[bool, CircuitRecord | None]:
        """Cache ``record`` unless the cached one is newer (higher ``seq``): whether it was taken, and the
        record it replaced. ``seq`` 0 (the hash is absent: deleted by an operator) always replaces, and so
        does any with ``force``."""
        now = self._monotonic()
        at = now if read_at is None else read_at
        with self._lock:
            cached = self._record
            stale = cached is not None and (record.seq < cached.seq or (newer_only and record.seq == cached.seq))
            if stale and record.seq != 0 and not force:
                return False, cached
            self._record, self._read_at, self._seen_at = record, at, now
        return True, cached

    def invalidate(self) -> None:
        """Forget when the record was read: the next look reads the store."""
        with self._lock:
            self._read_at = NEVER

    def current(self) -> tuple[CircuitRecord | None, float]:
        """The cached record and when it was read (:data:`NEVER` once invalidated)."""
        with self._lock:
            return self._record, self._read_at

    def last_known(self) -> tuple[CircuitRecord | None, float]:
        """The cached record and when it was received (kept through :meth:`invalidate`)."""
        with self._lock:
            return self._record, self._seen_at

    @property
    def record(self) -> CircuitRecord | None:
        """The cached record, however old."""
        with self._lock:
            return self._record
