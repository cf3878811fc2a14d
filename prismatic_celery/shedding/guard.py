"""The shedding guard: in the process that runs a task, shed it when its queue sheds and it is unimportant."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Ignore

from ..engine.requeue import can_requeue
from ..log import RateLimitedWarning, get_logger
from ..task import TaskGuard
from .config import QueuePolicy
from .park import park, park_record, totals_key
from .priority import broker_consumes_higher_first, message_importance, replayed
from .state import ShedView

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["ShedGuard"]

logger = get_logger("shedding")


class ShedGuard(TaskGuard):
    """Parks (or drops) a low-importance message about to run on a queue in shedding state.

    Costs a dictionary lookup per task; the shedding state is read from the
    store at most once per ``prismatic_shed_interval_s`` per process. A
    message that cannot be parked safely (arguments that are not JSON, Redis
    unreachable) runs instead: shedding never loses work in ``park`` mode.
    """

    def __init__(self, runtime: Runtime, policies: Mapping[str, QueuePolicy]) -> None:
        self.runtime = runtime
        self.policies = dict(policies)
        self.view = ShedView(runtime.store, runtime.keys, tuple(self.policies),
                             max_age_s=runtime.settings.shed_interval_s)
        self._higher_first: bool | None = None
        self._unparkable = RateLimitedWarning()

    @property
    def higher_first(self) -> bool:
        """True when the broker consumes higher priorities first (read once)."""
        if self._higher_first is None:
            self._higher_first = broker_consumes_higher_first(self.runtime.app)
        return self._higher_first

    def before_run(self, task: Task[Any, Any]) -> None:
        if not self.policies or not can_requeue(task):
            return
        request = task.request
        located = self.runtime.locate_task(task)
        if located is None:
            return
        domain, child = located
        policy = self.policies.get(child.queue)
        state = self.view.get(child.queue) if policy is not None else None
        if policy is None or state is None or replayed(task):
            return
        importance = message_importance(task, higher_first=self.higher_first)
        if importance is None or importance >= policy.cutoff:
            return
        fields: dict[str, Any] = {
            "domain": domain.name, "queue": child.queue, "task": task.name, "task_id": request.id,
            "backlog": state.backlog, "threshold": state.threshold, "importance": importance,
            "cutoff": policy.cutoff, "mode": policy.mode, "hostname": request.hostname or "",
        }
        if policy.mode == "park" and not self._park(task, policy, fields):
            return
        if policy.mode == "drop":
            self.runtime.store.hincr(totals_key(self.runtime.keys), {f"{child.queue}:dropped": 1})
        self.runtime.emit("shed", **fields)
        raise Ignore()

    def _park(self, task: Task[Any, Any], policy: QueuePolicy, fields: dict[str, Any]) -> bool:
        record = park_record(task, policy.queue, importance=fields["importance"], backlog=fields["backlog"],
                             threshold=fields["threshold"], hostname=fields["hostname"], parked_at=time.time())
        if record is None:
            self._unparkable.warn("shed-unparkable", queue=policy.queue, task=task.name, task_id=task.request.id,
                                  reason="arguments are not JSON; the message runs instead")
            return False
        outcome = park(self.runtime.store, self.runtime.keys, policy.queue, record,
                       cap=self.runtime.settings.shed_park_max)
        if not outcome.durable:
            self._unparkable.warn("shed-unparkable", queue=policy.queue, task=task.name, task_id=task.request.id,
                                  reason="store unavailable; the message runs instead")
            return False
        fields["parked"] = outcome.length
        return True
