"""The supervision engine: what happens when a supervised task crashes, and when it succeeds.

Runs in the process that executes the task (``SupervisedTask.__call__``) for
crashes and deferrals, and in the worker's main process (``SupervisedRequest``)
for the bookkeeping of successes. Decisions on a message are enacted with
:func:`~.requeue.requeue` (republish + ``Retry``); nothing here ever raises
anything else into the task.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Task

from ..log import get_logger, log_event
from ..remediation.actions import RetryWithBackoff
from ..remediation.backoff import delay_s, escalating_cooldown_s
from ..tree import Child, Domain, RestartType
from .cache import PauseCache
from .pauses import clear_pauses, read_pauses
from .recycle import recycle_current_process
from .requeue import can_requeue, requeue
from .restarts import RestartOutcome, record_restart

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["Engine"]

logger = get_logger("engine")
COOLDOWN_ATTEMPTS = 16


class Engine:
    """Enacts the tree's semantics for one app in one process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.backoff = RetryWithBackoff(
            initial_ms=settings.backoff_initial_ms, max_ms=settings.backoff_max_ms, jitter_ms=settings.backoff_jitter_ms
        )
        self.pauses = PauseCache(runtime.store, runtime.keys, runtime.supervisor.queues,
                                 max_age_s=settings.reconcile_interval_s)
        self.hostname = socket.gethostname()

    # -- in the task's process -------------------------------------------------------------
    def locate(self, task: Task[Any, Any]) -> tuple[Domain, Child] | None:
        """The domain and child of the running request."""
        request = task.request
        delivery = request.delivery_info if isinstance(request.delivery_info, dict) else None
        return self.runtime.locate(delivery, task.name)

    def before_run(self, task: Task[Any, Any]) -> None:
        """Defer the message when its queue is paused (raises Retry); else return at once."""
        if not self.runtime.supervisor.queues or not can_requeue(task):
            return
        located = self.locate(task)
        if located is None:
            return
        pause = self.pauses.get(located[1].queue)
        if pause is None:
            return
        remaining = max(0.05, pause.until - self.runtime.store.time())
        log_event(logging.INFO, "supervision-deferred", logger, task=task.name, id=task.request.id,
                  queue=located[1].queue, reason=pause.reason, countdown_s=round(remaining, 3))
        requeue(task, countdown_s=remaining, retries=task.request.retries or 0)

    def call(self, task: Task[Any, Any], body: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """Run the task body under the circuit breakers the task declares (``circuits=[...]`` option).

        A closed circuit costs no store round trip; an open one raises
        ``CircuitOpenError`` without running the body (handled by :meth:`on_crash`).
        """
        names = getattr(task, "circuits", None)
        if not names:
            return body(*args, **kwargs)
        call: Callable[[], Any] = functools.partial(body, *args, **kwargs)
        for name in reversed(tuple(names)):
            call = functools.partial(self.runtime.circuits.get(name).call, call)
        return call()

    def on_crash(self, task: Task[Any, Any], exc: BaseException) -> None:
        """Decide what a crash of a supervised task means; may raise Retry to re-run it."""
        located = self.locate(task)
        if located is None:
            return
        domain, child = located
        request = task.request
        attempt = int(request.retries or 0)
        context = self._context(task, exc, child)
        self.runtime.emit("crash", domain=domain.name, **context)
        if child.restart is RestartType.TRANSIENT and isinstance(exc, child.normal_exceptions):
            return  # a normal exit of a transient child: not restarted
        if not can_requeue(task):
            return
        restart = child.restart is not RestartType.TEMPORARY
        if restart and attempt >= self.runtime.settings.max_restarts_per_message:
            self.runtime.emit("escalation", domain=domain.name, reason="message_restarts_exhausted",
                              attempts=attempt, **context)
            return
        outcome = self._record(task, domain, child, attempt, context)
        self._announce(domain, child, outcome, context)
        if not restart:
            return  # temporary: recorded, never re-run
        countdown = delay_s(self.backoff, attempt + 1)
        if outcome.budget_exceeded:
            countdown = max(countdown, outcome.cooldown_s)
        self.runtime.emit("restart", domain=domain.name, attempt=attempt + 1, countdown_s=round(countdown, 3),
                          child_restarts=outcome.child_restarts, recorded=True, **context)
        requeue(task, countdown_s=countdown, retries=attempt + 1, exc=exc)

    def _context(self, task: Task[Any, Any], exc: BaseException, child: Child) -> dict[str, str]:
        return {
            "child": child.queue,
            "task": str(task.name),
            "task_id": str(task.request.id),
            "hostname": str(task.request.hostname or self.hostname),
            "exception": type(exc).__name__,
        }

    def _record(self, task: Task[Any, Any], domain: Domain, child: Child, attempt: int,
                context: dict[str, str]) -> RestartOutcome:
        settings = self.runtime.settings
        cooldowns = [
            escalating_cooldown_s(settings.cooldown_initial_s, settings.cooldown_max_s, n)
            for n in range(1, COOLDOWN_ATTEMPTS + 1)
        ]
        pause_s = settings.recycle_pause_s if domain.strategy.value == "one_for_all" else settings.pause_window_s
        event_context = {k: v for k, v in context.items() if k != "child"}
        return record_restart(
            self.runtime.store, self.runtime.keys, self.runtime.supervisor, domain, child,
            f"{task.request.id}:{attempt}",
            hotspot_window_s=settings.hotspot_window_s, pause_s=pause_s, cooldowns_s=cooldowns,
            cooldown_reset_s=2 * settings.cooldown_max_s, context=event_context,
            stream_maxlen=settings.event_stream_maxlen,
        )

    def _announce(self, domain: Domain, child: Child, outcome: RestartOutcome, context: dict[str, str]) -> None:
        if outcome.paused:
            reason = ("escalated" if outcome.escalated else "cooldown" if outcome.budget_exceeded
                      else domain.strategy.value)
            self.runtime.emit("pause", domain=domain.name, queues=",".join(outcome.paused), reason=reason,
                              cooldown_s=outcome.cooldown_s, recorded=True, **context)
            self.pauses.invalidate()
            self.runtime.broadcast_reconcile(pause=list(outcome.paused))
        if outcome.escalated:
            self.runtime.emit("escalation", domain=domain.name, reason="supervisor_budget_exceeded",
                              supervisor_restarts=outcome.supervisor_restarts, cooldown_s=outcome.cooldown_s,
                              recorded=True, **context)
        if outcome.recycle_generation and not recycle_current_process():
            log_event(logging.INFO, "recycle-unsupported", logger, domain=domain.name,
                      detail="this pool runs tasks in the worker process; in-process state is not reset")

    def after_success(self, task: Task[Any, Any]) -> None:
        """A supervised task succeeded: if its child caused rest_for_one pauses, end them.

        Costs nothing unless this process's pause view (refreshed once per
        period) shows a pause caused by this child.
        """
        located = self.locate(task)
        if located is None:
            return
        queue = located[1].queue
        if any(p.by == queue and p.reason == "rest_for_one" for p in self.pauses.current().values()):
            self.resume_after_success(queue)
            self.pauses.invalidate()

    def resume_after_success(self, queue: str) -> list[str]:
        """A child succeeded: end the rest_for_one pauses it caused (one read, one delete)."""
        domain_child = self.runtime.supervisor.locate(queue)
        if domain_child is None:
            return []
        domain = domain_child[0]
        pauses = read_pauses(self.runtime.store, self.runtime.keys, domain.queues)
        ended = [q for q, p in pauses.items() if p.by == queue and p.reason == "rest_for_one"]
        if ended:
            clear_pauses(self.runtime.store, self.runtime.keys, ended)
            self.runtime.emit("resume", domain=domain.name, queues=",".join(ended), reason="child_recovered",
                              child=queue, at=time.time())
            self.runtime.broadcast_reconcile(pause=[])
        return ended
