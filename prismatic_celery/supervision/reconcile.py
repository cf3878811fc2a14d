"""Worker-side convergence: consume exactly the supervised queues that are not paused.

The store's pause records are the source of truth. A background thread reads
them (one MGET per period, or at once when a broadcast says something
changed); the worker's event loop applies the difference with
``cancel_task_queue`` / ``add_task_queue`` (resumes in declaration order) and
recycles the pool processes of a domain whose recycle generation moved. A
worker started later, or one that missed a broadcast, converges within one
period.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..log import REPEATS, get_logger, log_event
from .pauses import Pause, cause_keys, parse_pauses
from .recycle import recycle_pool_processes

if TYPE_CHECKING:
    from celery.worker.consumer import Consumer

    from ..store import Store
    from ..store.keys import Keys
    from .cache import PauseFeed
    from .slots import RunningSlots
    from .tree import Supervisor

__all__ = ["Reconciler", "Snapshot"]

logger = get_logger("reconcile")
#: Read again this long after a pause's end, so its record has surely expired in the store.
EXPIRY_MARGIN_S = 0.05


@dataclass(frozen=True)
class Snapshot:
    """What the store said at one read."""

    pauses: dict[str, Pause] = field(default_factory=dict)
    recycle: dict[str, int] = field(default_factory=dict)

    def next_change_s(self) -> float | None:
        """Seconds until the first of these pauses may end by expiry (None when nothing is paused)."""
        if not self.pauses:
            return None
        return max(0.0, min(p.until for p in self.pauses.values()) - time.time()) + EXPIRY_MARGIN_S


class Reconciler:
    """Keeps one worker's consumption in line with the pause records."""

    def __init__(self, store: Store, keys: Keys, supervisor: Supervisor, intended: Sequence[str]) -> None:
        """``intended``: every queue the worker consumes when nothing is paused."""
        self.store, self.keys, self.supervisor = store, keys, supervisor
        self.consumed = tuple(intended)
        self.intended = tuple(q for q in supervisor.queues if q in set(intended))
        self.domains = tuple(d for d in supervisor.domain_list if set(d.queues) & set(self.intended))
        self.snapshot: Snapshot | None = None
        self._applied: Snapshot | None = None
        self._seen_recycle: dict[str, int] | None = None
        self.wake = threading.Event()
        self.feed: PauseFeed | None = None
        """Where each snapshot's pauses are shared with the worker's pool processes (set by the worker)."""
        self.slots: RunningSlots | None = None
        """A prefork pool's running slots, once the worker watches its pool: they say who served which domain."""

    @property
    def served_pids(self) -> dict[str, set[int]]:
        """The processes that have served each of this worker's domains: the pool processes the slots of a
        prefork pool name (each marks a domain at its first message of it), else this process (its pool runs
        the tasks in it)."""
        if self.slots is not None:
            found = self.slots.served()
            return {d.name: found.get(d.name, set()) for d in self.domains}
        pid = os.getpid()
        return {d.name: {pid} for d in self.domains}

    # background thread -------------------------------------------------------------------------
    def poll(self) -> Snapshot:
        """Read pauses and recycle generations (one round trip) and publish the snapshot."""
        keys = self.keys
        recycle_keys = [keys.key("recycle", d.name) for d in self.domains]
        wanted = cause_keys(keys, self.supervisor, self.supervisor.queues)  # every queue's: the feed shares them
        read_at = time.monotonic()
        raw = self.store.get_many([*recycle_keys, *(key for _, _, key in wanted)])
        recycle = {d.name: v if isinstance(v, int) else 0 for d, v in zip(self.domains, raw, strict=False)}
        pauses = parse_pauses(wanted, raw[len(recycle_keys):])
        snapshot = Snapshot(pauses=pauses, recycle=recycle)
        self.snapshot = snapshot
        if self.feed is not None and not getattr(self.store, "degraded", False):
            self.feed.publish(pauses, read_at)  # the pool processes' view (not from a store that is down)
        return snapshot

    # event loop -------------------------------------------------------------------------------
    def apply(self, consumer: Consumer) -> None:
        """Apply the newest snapshot to ``consumer`` (cheap; only touches what changed)."""
        snapshot = self.snapshot
        if snapshot is None or snapshot is self._applied:
            REPEATS.flush()
            return
        self._applied = snapshot
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is None:
            return
        for queue in self.intended:
            consuming = task_consumer.consuming_from(queue)
            pause = snapshot.pauses.get(queue)
            if pause is not None and consuming:
                consumer.cancel_task_queue(queue)
                REPEATS.log(f"queue-paused:{queue}", logging.INFO, "queue-paused", logger, queue=queue,
                            reason=pause.reason, by=pause.by, until=round(pause.until, 3))
            elif pause is None and not consuming:
                consumer.add_task_queue(queue)
                REPEATS.log(f"queue-resumed:{queue}", logging.INFO, "queue-resumed", logger, queue=queue)
        self._recycle(consumer, snapshot)

    def pause_now(self, consumer: Consumer, queues: Sequence[str]) -> None:
        """A broadcast named queues to pause: stop consuming them before the next read."""
        task_consumer = getattr(consumer, "task_consumer", None)
        for queue in queues:
            if queue in self.intended and task_consumer is not None and task_consumer.consuming_from(queue):
                consumer.cancel_task_queue(queue)
                REPEATS.log(f"queue-paused:{queue}", logging.INFO, "queue-paused", logger, queue=queue,
                            reason="broadcast")
        self.wake.set()

    def _recycle(self, consumer: Consumer, snapshot: Snapshot) -> None:
        if self._seen_recycle is None:
            self._seen_recycle = dict(snapshot.recycle)
            return
        for domain, generation in snapshot.recycle.items():
            if generation > self._seen_recycle.get(domain, 0):
                self._seen_recycle[domain] = generation
                pids = self.served_pids.get(domain, set())
                asked = recycle_pool_processes(consumer.pool, pids if self._shared() else None)
                log_event(logging.INFO, "pool-recycled", logger, domain=domain, generation=generation,
                          pids=",".join(map(str, asked)) or "none")

    def _shared(self) -> bool:
        """True when this worker serves more than one domain (recycle only the domain's processes)."""
        return len(self.domains) > 1 or any(
            q not in self.supervisor.queues for q in self.consumed
        )
