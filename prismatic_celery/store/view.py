"""A process's view of per-queue records, read from the store at most once per period.

Hot paths (a task about to run) ask the view with a dictionary lookup; the
store is read (one MGET) only when the view is older than ``max_age_s``,
never once per task. Subclasses say how to read: pause records, shedding states.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .base import Store
from .keys import Keys

__all__ = ["PeriodicView"]

T = TypeVar("T")


class PeriodicView(Generic[T]):
    """Records of ``queues``, at most ``max_age_s`` old; ``reads`` counts store reads."""

    def __init__(
        self, store: Store, keys: Keys, queues: Sequence[str], *, max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.keys = keys
        self.queues = tuple(queues)
        self.max_age_s = max_age_s
        self.clock = clock
        self.reads = 0
        self._items: dict[str, T] = {}
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def read(self) -> dict[str, T]:
        """Read every queue's record from the store (one round trip)."""
        raise NotImplementedError

    def current(self) -> dict[str, T]:
        """Every record of the view (refreshing it when stale)."""
        if self.clock() - self._read_at >= self.max_age_s:
            self.refresh()
        return self._items

    def refresh(self) -> dict[str, T]:
        """Read every record now."""
        with self._lock:
            if self.queues:
                self._items = self.read()
                self.reads += 1
            self._read_at = self.clock()
            return dict(self._items)

    def invalidate(self) -> None:
        """Force a read on the next lookup."""
        self._read_at = -float("inf")
