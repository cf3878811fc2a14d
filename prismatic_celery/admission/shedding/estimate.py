"""A worker's estimate of a queue's backlog at the moment of a shedding decision.

The sampler of the worker reads the backlog (every 20 ms while the queue
sheds); between two reads the backlog moves. The guard, in the same process,
decides on

    estimate = last read - messages this worker received from the queue since

which is exact for a queue this worker alone consumes (a message it received
is one the broker no longer counts), and high by what other workers took since
the read. Messages received while the read was under way count twice, so the
estimate errs low there. A read older than ``max_age_s`` gives no estimate at
all (nothing is shed on it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["BacklogEstimate", "Sample"]


@dataclass(frozen=True)
class Sample:
    """One read backlog, with this worker's receipt count when the sampler began reading it."""

    backlog: int
    at: float
    received: int


class BacklogEstimate:
    """Per-queue reads (written by the sampler thread) and receipts (counted by the guard in the main thread).

    ``floors`` are the queues' resume marks: receipts are counted only while some
    queue's last read is at or above its mark (below it nothing may be shed, and
    receipts could only lower the estimate further).
    """

    def __init__(self, floors: Mapping[str, int], *, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.floors = dict(floors)
        self.max_age_s = max_age_s
        self.clock = clock
        self.counting = False
        self._received: dict[str, int] = dict.fromkeys(self.floors, 0)  # fixed keys: safe to copy from a thread
        self._samples: dict[str, Sample] = {}

    def receipts(self) -> dict[str, int]:
        """The receipt counters now (the sampler takes them just before it reads the broker)."""
        return dict(self._received)

    def received(self, queue: str) -> None:
        """The worker received one message from ``queue`` (main thread)."""
        if self.counting and queue in self._received:
            self._received[queue] += 1

    def observe(self, backlogs: Mapping[str, int], receipts: Mapping[str, int]) -> None:
        """Record backlogs read after ``receipts`` were taken (sampler thread)."""
        now = self.clock()
        for queue, backlog in backlogs.items():
            if queue in self.floors:
                self._samples[queue] = Sample(backlog=int(backlog), at=now, received=int(receipts.get(queue, 0)))
        self.counting = any(s.backlog >= self.floors[q] for q, s in list(self._samples.items()))

    def estimate(self, queue: str) -> int | None:
        """The backlog of ``queue`` now; None without a read younger than ``max_age_s``."""
        sample = self._samples.get(queue)
        if sample is None or self.clock() - sample.at > self.max_age_s:
            return None
        return max(0, sample.backlog - (self._received.get(queue, 0) - sample.received))
