"""What only a worker has: its node name, ``--domain`` options, consumed queues, reconciler, running slots and
pause feed.

Made by the worker's bootsteps (``DomainStep`` before the pool forks, so a prefork pool's processes inherit it)
and kept on the app, where the task, the request and the control commands (through the consumer they are
given) find it. A process that is no worker (a producer, the CLI, a test tracing a task) has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from ..supervision.cache import PauseFeed
from ..supervision.reconcile import Reconciler
from ..supervision.slots import RunningSlots

__all__ = ["WorkerState", "ensure_worker_state", "worker_state"]

_ATTR = "_prismatic_worker"


@dataclass
class WorkerState:
    """One worker's own state, shared by its bootsteps."""

    hostname: str | None = None
    """The worker's node name, once its consumer started."""
    domains: tuple[str, ...] = ()
    """Its ``--domain`` options."""
    consumed_queues: tuple[str, ...] = ()
    """Every queue it consumes when nothing is paused."""
    reconciler: Reconciler | None = None
    """The main process's, once the consumer started."""
    slots: RunningSlots | None = None
    """A prefork worker's, made before its pool forks."""
    pause_feed: PauseFeed | None = None
    """The reconciler's pauses, shared with the pool processes (made before the pool forks)."""
    pool_watched: bool = False
    """Deaths of pool processes before their job was accepted are counted (a prefork pool)."""


def worker_state(app: Celery) -> WorkerState | None:
    """The worker state of ``app`` in this process; None in a process that is no worker."""
    found = getattr(app, _ATTR, None)
    return found if isinstance(found, WorkerState) else None


def ensure_worker_state(app: Celery) -> WorkerState:
    """The worker state of ``app`` in this process, made on first call (by the bootsteps)."""
    found = worker_state(app)
    if found is None:
        found = WorkerState()
        setattr(app, _ATTR, found)
    return found
