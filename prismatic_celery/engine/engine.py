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

from ..circuits import CircuitOpenError
from ..log import get_logger, log_event
from ..remediation.actions import (
    Action,
    CircuitBreak,
    DeadLetter,
    Escalate,
    RecycleProcess,
    RetryWithBackoff,
    Shed,
)
from ..remediation.backoff import delay_s, escalating_cooldown_s
from ..remediation.defaults import DEFAULT_RULES
from ..remediation.dlq import dead_letter_entry
from ..remediation.rules import Decision
from ..tree import Child, Domain, RestartType
from .cache import PauseCache
from .crash import HEADER, Crash
from .pauses import Pause, clear_pauses, read_pauses, set_pause
from .recycle import recycle_current_process
from .requeue import can_requeue, requeue
from .restarts import RestartOutcome, record_restart

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["Engine"]

logger = get_logger("engine")
COOLDOWN_ATTEMPTS = 16
# Actions that run the message again (each re-run is one restart of the child).
DEFAULT_RULE_NAMES = frozenset(r.name for r in DEFAULT_RULES)
DEATHS_TTL_S = 86_400.0  # a message's pool-process deaths are remembered this long
RERUN_ACTIONS = frozenset({"retry_with_backoff", "restart_child", "recycle_process", "circuit_break"})


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
        return self.runtime.locate_task(task)

    def before_run(self, task: Task[Any, Any]) -> None:
        """Defer the message when its queue is paused (raises Retry); else return at once."""
        if not self.pauses.current() or not can_requeue(task):
            return  # nothing is paused (one dictionary check per task)
        located = self.locate(task)
        if located is None:
            return
        pause = self.pauses.get(located[1].queue)
        if pause is None or getattr(self.runtime.store, "degraded", False):
            # With the store down a pause lives only in the memory of the process that made it, where
            # the child's recovery (in another process) cannot end it: the queues are still stopped
            # by the workers' own reconciliation, so a message already here simply runs.
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
        """Decide what a crash of a supervised task means; may raise Retry to re-run it.

        Order: an open circuit defers the message (not a crash); a transient
        child's normal exception ends it; otherwise the remediation is chosen
        (a lesson that worked, else the first matching rule) and enacted.
        """
        if isinstance(exc, CircuitOpenError):
            self._defer_for_circuit(task, exc)
            return
        located = self.locate(task)
        if located is None:
            return
        domain, child = located
        context = self._context(task, exc, child)
        if child.restart is RestartType.TRANSIENT and isinstance(exc, child.normal_exceptions):
            self.runtime.emit("crash", domain=domain.name, outcome="normal_exit", **context)
            return
        if not can_requeue(task):
            self.runtime.emit("crash", domain=domain.name, outcome="not_requeueable", **context)
            return
        crash = Crash.capture(self.runtime, task, exc, domain, child)
        decision = self.decide(crash)
        self._enact(task, exc, crash, decision, context)

    def decide(self, crash: Crash) -> Decision:
        """The remediation for a crash: a user rule, else a lesson whose remediation worked, else a default."""
        ruled = self.runtime.registry.lookup(crash.exc, task_name=crash.task_name, domain=crash.domain.name,
                                             failure_class=crash.failure_class)
        if ruled.rule_name in DEFAULT_RULE_NAMES and isinstance(ruled.action, RetryWithBackoff):
            ruled = Decision(ruled.rule_name, self.backoff)  # built-in rules back off as the settings say
        learning = self.runtime.learning
        return learning.lookup(crash, ruled) if learning is not None else ruled

    def _enact(self, task: Task[Any, Any], exc: BaseException, crash: Crash, decision: Decision,
               context: dict[str, str]) -> None:
        action = decision.action
        domain, child = crash.domain, crash.child
        attempt = crash.attempt
        reruns = action.name in RERUN_ACTIONS and child.restart is not RestartType.TEMPORARY
        learning = self.runtime.learning
        fields = {"domain": domain.name, "action": action.name, "rule": decision.rule_name or "",
                  "failure_class": crash.failure_class, **context}
        exhausted = reruns and attempt >= self.runtime.settings.max_restarts_per_message
        if learning is not None:
            learning.crashed(crash, remediation=action.name if reruns and not exhausted else None,
                             escalated=exhausted or isinstance(action, Escalate))
        # a re-run's crash is in the restart script's stream entry; any other crash gets its own
        self.runtime.emit("crash", outcome="restarts_exhausted" if exhausted else action.name,
                          recorded=reruns and not exhausted, **fields)
        if exhausted:
            self._dead_letter(task, crash, reason="restarts_exhausted")
            self.runtime.emit("escalation", reason="message_restarts_exhausted", attempts=attempt, **fields)
            if learning is not None:
                learning.failed_for_good(crash)
            return
        if not reruns:
            self._no_rerun(task, crash, decision, fields)
            return
        countdown = self._prepare_rerun(crash, action)
        outcome = self._record(f"{crash.task_id}:{attempt}", domain, child,
                               {**context, "action": action.name, "rule": decision.rule_name or ""})
        self._announce(domain, child, outcome, context)
        if outcome.budget_exceeded:
            countdown = max(countdown, outcome.cooldown_s)
        self.runtime.emit("remediation", attempt=attempt + 1, countdown_s=round(countdown, 3), recorded=True,
                          **fields)  # the restart entry of the stream names the action and rule
        self.runtime.emit("restart", domain=domain.name, attempt=attempt + 1, countdown_s=round(countdown, 3),
                          child_restarts=outcome.child_restarts, recorded=True, **context)
        requeue(task, countdown_s=countdown, retries=attempt + 1, exc=exc,
                headers={HEADER: crash.tracking(decision)})

    def _prepare_rerun(self, crash: Crash, action: Action) -> float:
        """Apply the side effect of a re-running action; the countdown before the re-run."""
        attempt = crash.attempt + 1
        if isinstance(action, RetryWithBackoff):
            return delay_s(action, attempt)
        if isinstance(action, CircuitBreak):
            circuits = self.runtime.circuits
            if action.target not in circuits:
                circuits.declare(action.target)
            circuits.open_for(action.target, action.duration_ms)
            return action.duration_ms / 1000
        if isinstance(action, RecycleProcess) and not recycle_current_process():
            log_event(logging.INFO, "recycle-unsupported", logger, task=crash.task_name,
                      detail="this pool runs tasks in the worker process; in-process state is not reset")
        return delay_s(self.backoff, attempt)  # restart_child and recycle_process use the default backoff

    def _no_rerun(self, task: Task[Any, Any], crash: Crash, decision: Decision, fields: dict[str, Any]) -> None:
        """temporary children and the dead_letter / shed / escalate actions: the message stops here, kept."""
        action = decision.action
        learning = self.runtime.learning
        if isinstance(action, Escalate):
            self.runtime.emit("escalation", reason=action.reason, **fields)
            self._dead_letter(task, crash, reason=f"escalated: {action.reason}")
        elif isinstance(action, (DeadLetter, Shed)):
            self.runtime.emit("remediation", **fields)
            self._dead_letter(task, crash, reason=action.name)
        elif crash.child.restart is RestartType.TEMPORARY:
            return  # a temporary child's crash is recorded, never re-run, and its message is not kept
        else:
            self._dead_letter(task, crash, reason=action.name)
        if learning is not None:
            learning.failed_for_good(crash)

    def _dead_letter(self, task: Task[Any, Any], crash: Crash, *, reason: str) -> None:
        request = task.request
        priority = (request.delivery_info or {}).get("priority") if isinstance(request.delivery_info, dict) else None
        entry = dead_letter_entry(
            task=crash.task_name, task_id=crash.task_id, args=request.args, kwargs=request.kwargs,
            queue=crash.child.queue, domain=crash.domain.name, reason=reason, exception=crash.exc_type,
            message=crash.message, traceback=crash.traceback, fingerprint=crash.fingerprint,
            failure_class=crash.failure_class, attempts=crash.attempt + 1,
            remediations=crash.remediations, priority=priority if isinstance(priority, int) else None,
        )
        self.runtime.dlq.push(entry)

    def _defer_for_circuit(self, task: Task[Any, Any], exc: CircuitOpenError) -> None:
        """A circuit the task depends on is open: re-queue for when it may half-open; not a crash."""
        if not can_requeue(task):
            return
        countdown = max(0.05, float(exc.retry_after_s or 0.0))
        located = self.locate(task)
        if located is not None and self.runtime.settings.circuit_pause_child:
            domain, child = located
            now = self.runtime.store.time()
            set_pause(self.runtime.store, self.runtime.keys,
                      Pause(child.queue, domain.name, "circuit", exc.name, now, now + countdown))
            self.runtime.broadcast_reconcile(pause=[child.queue])
        log_event(logging.INFO, "supervision-deferred", logger, task=task.name, id=task.request.id,
                  reason=f"circuit {exc.name} {exc.state}", countdown_s=round(countdown, 3))
        requeue(task, countdown_s=countdown, retries=int(task.request.retries or 0))

    def _context(self, task: Task[Any, Any], exc: BaseException, child: Child) -> dict[str, str]:
        return {
            "child": child.queue,
            "task": str(task.name),
            "task_id": str(task.request.id),
            "hostname": str(task.request.hostname or self.hostname),
            "exception": type(exc).__name__,
        }

    def _record(self, member: str, domain: Domain, child: Child, context: dict[str, str]) -> RestartOutcome:
        settings = self.runtime.settings
        cooldowns = [
            escalating_cooldown_s(settings.cooldown_initial_s, settings.cooldown_max_s, n)
            for n in range(1, COOLDOWN_ATTEMPTS + 1)
        ]
        pause_s = settings.recycle_pause_s if domain.strategy.value == "one_for_all" else settings.pause_window_s
        event_context = {k: v for k, v in context.items() if k != "child"}
        return record_restart(
            self.runtime.store, self.runtime.keys, self.runtime.supervisor, domain, child, member,
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

    # -- in the worker's main process ---------------------------------------------------------
    def worker_lost(self, domain: Domain, child: Child, task_id: str, task_name: str, hostname: str) -> int:
        """A pool process died running ``task_id``: count the death and the restart; deaths so far."""
        deaths = self.runtime.store.incr(self.runtime.keys.key("deaths", task_id), ttl_s=DEATHS_TTL_S)
        context = {"child": child.queue, "task": task_name, "task_id": task_id, "hostname": hostname,
                   "exception": "WorkerLostError"}
        self.runtime.emit("crash", domain=domain.name, outcome="worker_lost", deaths=deaths, **context)
        outcome = self._record(f"{task_id}:lost:{deaths}", domain, child, context)
        self._announce(domain, child, outcome, context)
        if self.runtime.learning is not None:
            self.runtime.learning.metrics.crash(task_id, deaths > 1)
        return deaths

    def after_success(self, task: Task[Any, Any]) -> None:
        """A supervised task succeeded: if its child caused rest_for_one pauses, end them.

        Costs nothing unless this process's pause view (refreshed once per
        period) shows a pause caused by this child.
        """
        pauses = self.pauses.current()
        located = self.locate(task) if pauses else None
        if located is not None:
            queue = located[1].queue
            if any(p.by == queue and p.reason == "rest_for_one" for p in pauses.values()):
                self.resume_after_success(queue)
                self.pauses.invalidate()
        tracking = getattr(task.request, HEADER, None)
        if isinstance(tracking, dict) and self.runtime.learning is not None:
            self.runtime.learning.succeeded(tracking, str(task.request.id))  # only tasks that had crashed

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
