"""Per-process view of pause records, refreshed at most once per reconcile period.

Lets a process decide "is this queue paused?" with a dictionary lookup; the
store is read at most once per ``prismatic_reconcile_interval_s`` per process,
never once per task.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ..keys import Keys
from ..store import Store
from .pauses import Pause, read_pauses

__all__ = ["PauseCache"]


class PauseCache:
    """The pauses of ``queues``, at most ``max_age_s`` old."""

    def __init__(
        self, store: Store, keys: Keys, queues: Sequence[str], *, max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.keys = keys
        self.queues = tuple(queues)
        self.max_age_s = max_age_s
        self.clock = clock
        self._pauses: dict[str, Pause] = {}
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def get(self, queue: str) -> Pause | None:
        """The live pause of ``queue``, if any (refreshing the view when it is stale)."""
        if self.clock() - self._read_at >= self.max_age_s:
            self.refresh()
        pause = self._pauses.get(queue)
        if pause is not None and pause.until <= time.time():
            return None
        return pause

    def current(self) -> dict[str, Pause]:
        """Every live pause of the view (refreshing it when stale)."""
        if self.clock() - self._read_at >= self.max_age_s:
            self.refresh()
        return self._pauses

    def refresh(self) -> dict[str, Pause]:
        """Read every pause now (one round trip)."""
        with self._lock:
            self._pauses = read_pauses(self.store, self.keys, self.queues)
            self._read_at = self.clock()
            return dict(self._pauses)

    def invalidate(self) -> None:
        """Force a read on the next lookup."""
        self._read_at = -float("inf")
