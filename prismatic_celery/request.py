"""The supervised Request: bookkeeping that must happen in the worker's main process.

Under prefork the parent learns here which pool process accepted a task, so a
``one_for_all`` restart can recycle exactly the processes that served the
domain. The hook is guarded: bookkeeping never changes what Celery does with
the message. (Celery generates a per-task subclass whose ``on_success`` does
not call its base, so success-time work happens in the task's process instead:
see :meth:`prismatic_celery.engine.Engine.after_success`.)
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request

from .log import get_logger, log_event
from .runtime import get_runtime

__all__ = ["SupervisedRequest"]

logger = get_logger("request")


class SupervisedRequest(Request):
    """Celery's Request plus a note of which pool process serves which domain."""

    def on_accepted(self, pid: Any, time_accepted: Any) -> Any:
        result = super().on_accepted(pid, time_accepted)
        try:
            self._note_pid(pid)
        except Exception as exc:  # bookkeeping only
            log_event(logging.ERROR, "request-hook-failed", logger, hook="on_accepted", error=repr(exc)[:300])
        return result

    def _note_pid(self, pid: Any) -> None:
        runtime = get_runtime(self.task.app)
        if runtime is None or runtime.reconciler is None or not pid:
            return
        delivery = self.delivery_info if isinstance(self.delivery_info, dict) else None
        located = runtime.locate(delivery, self.task.name)
        if located is not None:
            runtime.reconciler.served_pids.setdefault(located[0].name, set()).add(int(pid))
