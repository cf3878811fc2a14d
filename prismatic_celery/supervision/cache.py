"""Per-process view of pause records, refreshed at most once per reconcile period.

Lets a process decide "is this queue paused?" with a dictionary lookup; the
store is read at most once per ``prismatic_reconcile_interval_s`` per process,
never once per task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..store import Store
from ..store.keys import Keys
from ..store.view import PeriodicView
from .pauses import Pause, read_pauses
from .tree import Supervisor

__all__ = ["PauseCache"]


class PauseCache(PeriodicView[Pause]):
    """The pauses of ``queues``, at most ``max_age_s`` old."""

    def __init__(self, store: Store, keys: Keys, queues: Sequence[str], *, max_age_s: float, supervisor: Supervisor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(store, keys, queues, max_age_s=max_age_s, clock=clock)
        self.supervisor = supervisor

    def read(self) -> dict[str, Pause]:
        return read_pauses(self.store, self.keys, self.supervisor, self.queues)

    def get(self, queue: str) -> Pause | None:
        """The live pause of ``queue``, if any (refreshing the view when it is stale)."""
        pause = self.current().get(queue)
        if pause is not None and pause.until <= time.time():
            return None
        return pause
