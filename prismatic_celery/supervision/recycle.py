"""Replacing pool processes: fresh interpreter state without losing a result.

* :func:`recycle_current_process` (inside a prefork pool child): the process
  finishes the task it is running, hands its result to the parent, and exits
  instead of taking another job; billiard starts a replacement.
* :func:`recycle_pool_processes` (in the worker's main process): the same for
  chosen pool processes, e.g. every process that served a domain
  (``one_for_all``).

Both use billiard's per-process shutdown event, which exists when the pool is
created with restarts allowed (the plugin turns ``worker_pool_restarts`` on). A
process checks it before taking its next job, so an idle process is woken with
a no-op job (as Celery's own ``pool_restart`` does).
Solo and threads pools run tasks in the worker itself and cannot be recycled:
the functions return False and the caller logs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from celery.utils.functional import noop

__all__ = ["process_started_at", "recycle_current_process", "recycle_pool_processes"]

_started = [time.time()]


def _forked() -> None:
    _started[0] = time.time()


os.register_at_fork(after_in_child=_forked)


def process_started_at() -> float:
    """When this process started (a forked pool process: when it was forked), in seconds since the epoch."""
    return _started[0]


def recycle_current_process() -> bool:
    """Ask this pool child to exit after its current task; False outside a prefork child."""
    try:
        from billiard.process import current_process
    except ImportError:  # billiard ships with Celery; without it there is no prefork pool
        return False
    target = getattr(current_process(), "_target", None)
    shutdown = getattr(target, "_shutdown", None)
    if shutdown is None or not hasattr(shutdown, "set"):
        return False
    shutdown.set()
    return True


def recycle_pool_processes(pool: object, pids: Iterable[int] | None = None) -> list[int]:
    """Ask pool processes (all, or those in ``pids``) to exit after their current task.

    ``pool`` is the worker's Celery pool (``consumer.pool``); returns the pids asked.
    """
    controls = getattr(getattr(pool, "_pool", None), "_poolctrl", None)
    if not isinstance(controls, dict):
        return []
    wanted = None if pids is None else set(pids)
    asked = []
    for pid, event in list(controls.items()):
        if event is not None and (wanted is None or pid in wanted):
            event.set()
            asked.append(pid)
    # An idle pool process blocks reading its next job and only looks at its shutdown event
    # after one: hand out one no-op job per process asked (what Celery's pool_restart does for one).
    apply_async = getattr(getattr(pool, "_pool", None), "apply_async", None)
    if callable(apply_async):
        for _ in asked:
            apply_async(noop)
    return asked
