"""The supervision engine: what a failed execution means for its message and for its child.

Two levels of failure:

* a **message failure** (one failed execution) is handled by remediation alone: the
  message runs again under a remediation (backoff, circuit wait, fresh process), goes to
  the dead-letter queue, or ends as plain Celery would end it;
* a **child failure** (OTP's crash) is when the child's executions in its sliding window
  fail at a high rate (:mod:`.window`); only then do the domain's strategy, budgets and
  escalation act.

Both are decided together, in one store round trip (``restart.lua``), after the crash was
captured, fingerprinted and classified once and its remediation chosen once. Runs in the
process that executes the task (the task pipeline's pause and crash stages) and, for pool-process
deaths, in the worker's main process (:mod:`.lost`, called by ``SupervisedRequest``). Decisions on a message are enacted
with :func:`~.requeue.requeue` (republish + ``Retry``) or by letting Celery fail the task;
nothing here ever raises anything else into the task.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..circuits import CircuitOpenError
from ..lessons.ladder import RERUN_ACTIONS, process_random, quick_retry
from ..lessons.learning import LESSON_RULE
from ..log import REPEATS, get_logger, log_event
from ..remediation.actions import CircuitBreak, Escalate, RecycleProcess, RetryWithBackoff
from ..remediation.backoff import delay_s, escalating_cooldown_s
from ..remediation.defaults import DEFAULT_RULE_NAMES
from ..remediation.dlq import dead_letter_entry
from ..remediation.rules import Decision
from .cache import PauseCache
from .crash import HEADER, Crash
from .pauses import Pause, clear_pauses, read_pauses, rest_cause, set_pause
from .recycle import recycle_current_process
from .requeue import can_requeue, requeue
from .restarts import ChildPolicy, RestartOutcome, failure_call, parse_outcome
from .tree import Child, Domain, RestartType, Supervisor

if TYPE_CHECKING:
    from ..circuits import Circuits
    from ..config import Settings
    from ..lessons.learning import Learning
    from ..lessons.store import Lesson
    from ..remediation import RemediationRegistry
    from ..remediation.dlq import DeadLetterQueue
    from ..store import Store
    from ..store.keys import Keys
    from .locate import AnyTask, Locator
    from .ports import BroadcastReconcile, Emit, PendingSuccesses

__all__ = ["DEFER_MAX_S", "PATTERN_TTL_S", "Engine", "Fate"]

logger = get_logger("engine")
COOLDOWN_ATTEMPTS = 16
#: A failure pattern the rules escalate calls for a person once; again only after this long unseen.
PATTERN_TTL_S = 86_400.0
#: A message deferred because its queue is paused comes back at least this often (seconds), so it runs
#: within about a second of the pause ending, however long the pause was meant to last.
DEFER_MAX_S = 1.0


@dataclass(frozen=True)
class Fate:
    """What happens to a failed message: ``rerun`` (after ``countdown_s``), ``dead_letter`` or ``end``.

    ``reason`` says why (the dead letter's reason; for ``end``, the crash's outcome);
    ``remediation`` is the action applied when the message runs again.
    """

    outcome: str
    reason: str
    countdown_s: float = -1.0
    remediation: str | None = None

    @property
    def final(self) -> bool:
        """The message will not run again under the plugin."""
        return self.outcome != "rerun"


class Engine:
    """Enacts the tree's semantics for one app in one process."""

    def __init__(
        self, *, store: Store, keys: Keys, supervisor: Supervisor, settings: Settings, circuits: Circuits,
        registry: RemediationRegistry, dlq: DeadLetterQueue, learning: Learning | None, locator: Locator,
        emit: Emit, broadcast_reconcile: BroadcastReconcile, pending_successes: PendingSuccesses,
    ) -> None:
        self.store, self.keys, self.supervisor, self.settings = store, keys, supervisor, settings
        self.circuits, self.registry, self.dlq, self.learning = circuits, registry, dlq, learning
        self.locator, self.emit, self.broadcast_reconcile = locator, emit, broadcast_reconcile
        self.pending_successes = pending_successes
        self.backoff = RetryWithBackoff(initial_ms=round(settings.backoff_initial_s * 1000),
                                        max_ms=round(settings.backoff_max_s * 1000),
                                        jitter_ms=round(settings.backoff_jitter_s * 1000))
        self.pauses = PauseCache(store, keys, supervisor.queues,
                                 max_age_s=settings.reconcile_interval_s, supervisor=supervisor)
        self.hostname = socket.gethostname()
        self.random = process_random()
        cooldowns = [escalating_cooldown_s(settings.cooldown_initial_s, settings.cooldown_max_s, n)
                     for n in range(1, COOLDOWN_ATTEMPTS + 1)]
        self._policy = {strategy: ChildPolicy(
            window_s=settings.child_window_s, min_executions=settings.child_min_executions,
            failure_rate=settings.child_failure_rate, hotspot_window_s=settings.hotspot_window_s,
            pause_s=settings.recycle_pause_s if strategy == "one_for_all" else settings.pause_window_s,
            cooldowns_s=cooldowns, cooldown_reset_s=2 * settings.cooldown_max_s,
            stream_maxlen=settings.event_stream_maxlen,
        ) for strategy in ("one_for_one", "rest_for_one", "one_for_all")}

    def policy(self, domain: Domain) -> ChildPolicy:
        """When a child of ``domain`` fails, and what its failure does."""
        return self._policy[domain.strategy.value]

    # -- in the task's process -------------------------------------------------------------
    def locate(self, task: AnyTask) -> tuple[Domain, Child] | None:
        """The domain and child of the running request."""
        return self.locator.locate_task(task)

    def before_run(self, task: AnyTask) -> None:
        """Defer the message when its queue is paused (raises Retry); else return at once.

        The process's view of the pauses may be a period old, so a pause it shows is read
        again before deferring; the message comes back within :data:`DEFER_MAX_S` (it waits
        in the broker while its queue is not consumed) and runs soon after the pause ends.
        """
        if not self.pauses.current() or not can_requeue(task):
            return  # nothing is paused (one dictionary check per task)
        located = self.locate(task)
        if located is None:
            return
        queue = located[1].queue
        store = self.store
        if self.pauses.get(queue) is None or getattr(store, "degraded", False):
            # With the store down a pause lives only in the memory of the process that made it, where
            # the child's recovery (in another process) cannot end it: the queues are still stopped
            # by the workers' own reconciliation, so a message already here simply runs.
            return
        pause = read_pauses(store, self.keys, self.supervisor, [queue]).get(queue)
        if pause is None:
            self.pauses.invalidate()
            return
        countdown = min(DEFER_MAX_S, max(0.05, pause.until - time.time()))
        REPEATS.log(f"deferred:{queue}", logging.INFO, "supervision-deferred", logger, task=task.name,
                    id=task.request.id, queue=queue, reason=pause.reason, countdown_s=round(countdown, 3))
        requeue(task, countdown_s=countdown, retries=task.request.retries or 0)

    def on_crash(self, task: AnyTask, exc: BaseException) -> None:
        """Decide what a failed execution of a supervised task means; may raise Retry to re-run it.

        An open circuit defers the message (not a failure); a transient child's normal
        exception ends it as plain Celery would; otherwise the crash is captured once,
        its remediation chosen once (a user rule, a lesson that worked, a default rule)
        and everything is recorded in one round trip after the lesson's.
        """
        if isinstance(exc, CircuitOpenError):
            self._defer_for_circuit(task, exc)
            return
        located = self.locate(task)
        if located is None:
            return
        domain, child = located
        if not can_requeue(task):
            self.emit("crash", domain=domain.name, outcome="not_requeueable",
                      **self._context(task, exc, child))
            return
        if child.restart is RestartType.TRANSIENT and isinstance(exc, child.normal_exceptions):
            self.emit("crash", domain=domain.name, outcome="normal_exit", **self._context(task, exc, child))
            return
        crash = Crash.capture(task, exc, domain, child, in_app_modules=self.settings.in_app_modules,
                              failure_class_overrides=self.settings.failure_class_overrides)
        learning = self.learning
        lesson = learning.record(crash) if learning is not None else None
        decision = self.decide(crash, lesson)
        fate = self.fate(crash, decision)
        context = self._context(task, exc, child)
        entry = self._dead_letter(task, crash, fate.reason) if fate.outcome == "dead_letter" else None
        known = learning.knows(lesson) if learning is not None else False
        outcome = self._commit(crash, decision, fate, context, known=known,
                               recurring=lesson is not None and lesson.count > 1, entry=entry)
        if fate.outcome == "rerun":
            self._apply_side_effect(crash, decision)
            requeue(task, countdown_s=outcome.countdown_s, retries=int(task.request.retries or 0), exc=exc,
                    headers={HEADER: crash.tracking(decision, known=known)})

    def decide(self, crash: Crash, lesson: Lesson | None = None) -> Decision:
        """The remediation for a crash: a user rule, else a lesson whose remediation worked, else a default."""
        ruled = self.registry.lookup(crash.exc, task_name=crash.task_name, domain=crash.domain.name,
                                             failure_class=crash.failure_class)
        if ruled.rule_name in DEFAULT_RULE_NAMES and isinstance(ruled.action, RetryWithBackoff):
            ruled = Decision(ruled.rule_name, self.backoff)  # built-in rules back off as the settings say
        learning = self.learning
        return learning.lookup(crash, ruled, lesson, backoff=self.backoff) if learning is not None else ruled

    def fate(self, crash: Crash, decision: Decision) -> Fate:
        """What the restart type and the decision make of the failed message."""
        action = decision.action
        if crash.child.restart is RestartType.TEMPORARY:
            return Fate("end", "temporary")  # never run again: it fails as plain Celery fails it
        if action.name not in RERUN_ACTIONS:
            return Fate("dead_letter", f"escalated: {action.reason}" if isinstance(action, Escalate) else action.name)
        if crash.attempt >= self.settings.max_restarts_per_message:
            return Fate("dead_letter", "restarts_exhausted")
        attempt = crash.attempt + 1
        if isinstance(action, RetryWithBackoff):
            countdown = delay_s(action, attempt)
        elif isinstance(action, CircuitBreak):
            countdown = action.duration_ms / 1000
        elif isinstance(action, RecycleProcess):  # the fresh process is the fix: no need to wait long
            countdown = delay_s(quick_retry(self.backoff), attempt)
        else:  # restart_child uses the default backoff
            countdown = delay_s(self.backoff, attempt)
        if attempt > 1 and (decision.rule_name or "").startswith(f"{LESSON_RULE}."):
            # a message that failed again never comes back sooner than the default backoff says, whatever a
            # lesson chose (a rule's own schedule is the rule's)
            countdown = max(countdown, delay_s(self.backoff, attempt))
        return Fate("rerun", action.name, countdown, remediation=action.name)

    def _apply_side_effect(self, crash: Crash, decision: Decision) -> None:
        """What a re-running action does besides the re-run: open a circuit, recycle this process."""
        action = decision.action
        if isinstance(action, CircuitBreak):
            circuits = self.circuits
            if action.target not in circuits:
                circuits.declare(action.target)
            circuits.open_for(action.target, action.duration_ms)
        elif isinstance(action, RecycleProcess) and not recycle_current_process():
            log_event(logging.INFO, "recycle-unsupported", logger, task=crash.task_name,
                      detail="this pool runs tasks in the worker process; in-process state is not reset")

    def _commit(self, crash: Crash, decision: Decision, fate: Fate, context: dict[str, str], *,
                known: bool, recurring: bool, entry: dict[str, object] | None) -> RestartOutcome:
        """Record the failure, the child's verdict, the message's fate, lesson and knowledge (one round trip)."""
        domain, child = crash.domain, crash.child
        fields = {"domain": domain.name, **context, "action": decision.action.name, "rule": decision.rule_name or "",
                  "failure_class": crash.failure_class, "fingerprint": crash.fingerprint}
        message = self.message_event(fate, fields, attempt=crash.attempt + 1)
        escalate = isinstance(decision.action, Escalate)
        pattern_event = {"type": "escalation", **fields, "reason": getattr(decision.action, "reason", "")}
        call = failure_call(
            self.keys, self.supervisor, domain, child, f"{crash.task_id}:{crash.attempt}",
            self.policy(domain), pending_successes=self._pending_successes(child.queue),
            context={k: v for k, v in context.items() if k != "child"},
            message_event={k: str(v) for k, v in message.items()}, countdown_s=fate.countdown_s,
            jitter=self.random.random(), pattern=self.keys.key("pattern", crash.fingerprint),
            pattern_ttl_s=PATTERN_TTL_S if escalate else 0.0,
            pattern_event={k: str(v) for k, v in pattern_event.items()},
        )
        calls = [call]
        learning = self.learning
        if learning is not None:
            calls += learning.calls(crash, known=known, recurring=recurring, remediation=fate.remediation,
                                    dead_lettered=entry is not None, final=fate.final)
        if entry is not None:
            calls.append(self.dlq.push_call(entry))
        replies = self.store.run_many(calls)
        outcome = parse_outcome(domain, replies[0])
        if entry is not None:
            self.dlq.pushed(calls[-1], replies[-1])
        self.announce(domain, child, outcome, context, message, recorded=True)
        if escalate and outcome.new_pattern:
            self.emit("escalation", recorded=True, **{k: v for k, v in pattern_event.items() if k != "type"})
        if (outcome.escalated or (escalate and outcome.new_pattern)) and learning is not None:
            learning.metrics.escalated(crash.task_id)
        return outcome

    @staticmethod
    def message_event(fate: Fate, fields: Mapping[str, object], *, attempt: int) -> dict[str, object]:
        """The message's one event: a remediation (re-run), a dead letter, or a recorded crash."""
        if fate.outcome == "rerun":
            return {"type": "remediation", **fields, "attempt": attempt, "countdown_s": fate.countdown_s}
        if fate.outcome == "dead_letter":
            return {"type": "dead_letter", **fields, "reason": fate.reason, "attempts": attempt}
        return {"type": "crash", **fields, "outcome": fate.reason}

    def _pending_successes(self, queue: str) -> int:
        """This process's successes of ``queue`` not yet flushed, handed to the failure's script call."""
        return int(self.pending_successes(queue))

    def _dead_letter(self, task: AnyTask, crash: Crash, reason: str) -> dict[str, object]:
        request = task.request
        priority = (request.delivery_info or {}).get("priority") if isinstance(request.delivery_info, dict) else None
        return dead_letter_entry(
            task=crash.task_name, task_id=crash.task_id, args=request.args, kwargs=request.kwargs,
            queue=crash.child.queue, domain=crash.domain.name, reason=reason, exception=crash.exc_type,
            message=crash.message, traceback=crash.traceback, fingerprint=crash.fingerprint,
            failure_class=crash.failure_class, attempts=crash.attempt + 1,
            remediations=crash.remediations, priority=priority if isinstance(priority, int) else None,
        )

    def _defer_for_circuit(self, task: AnyTask, exc: CircuitOpenError) -> None:
        """A circuit the task depends on is open: re-queue for when it may half-open; not a failure."""
        if not can_requeue(task):
            return
        countdown = max(0.05, float(exc.retry_after_s or 0.0))
        located = self.locate(task)
        if located is not None and self.settings.circuit_pause_child:
            domain, child = located
            now = self.store.time()
            set_pause(self.store, self.keys,
                      Pause(child.queue, domain.name, "circuit", exc.name, now, now + countdown))
            self.broadcast_reconcile(pause=[child.queue])
        REPEATS.log(f"deferred:circuit:{exc.name}", logging.INFO, "supervision-deferred", logger, task=task.name,
                    id=task.request.id, reason=f"circuit {exc.name} {exc.state}", countdown_s=round(countdown, 3))
        requeue(task, countdown_s=countdown, retries=int(task.request.retries or 0))

    def _context(self, task: AnyTask, exc: BaseException, child: Child) -> dict[str, str]:
        return {
            "child": child.queue,
            "task": str(task.name),
            "task_id": str(task.request.id),
            "hostname": str(task.request.hostname or self.hostname),
            "exception": type(exc).__name__,
        }

    def announce(self, domain: Domain, child: Child, outcome: RestartOutcome, context: dict[str, str],
                  message: dict[str, object] | None, *, recorded: bool) -> None:
        """Tell the listeners what one failure decided (the store's stream already has it when ``recorded``)."""
        if message is not None:
            kind = str(message["type"])
            fields = {k: v for k, v in message.items() if k != "type"}
            if "countdown_s" in fields:
                fields["countdown_s"] = round(outcome.countdown_s, 3)
            self.emit(kind, recorded=recorded, **fields)
        if outcome.foreign:
            log_event(logging.WARNING, "store-corrupt-value", logger, key=self.keys.key("executions",
                                                                                              child.queue),
                      detail="foreign data in the execution window was removed")
        if not outcome.tripped:
            return
        event_context = {k: v for k, v in context.items() if k != "child"}
        self.emit("restart", domain=domain.name, child=child.queue, child_restarts=outcome.child_restarts,
                          domain_restarts=outcome.domain_restarts, executions=outcome.successes + outcome.failures,
                          failures=outcome.failures, window_s=self.policy(domain).window_s, recorded=True,
                          **event_context)
        if outcome.paused:
            reason = ("escalated" if outcome.escalated else "cooldown" if outcome.budget_exceeded
                      else domain.strategy.value)
            self.emit("pause", domain=domain.name, child=child.queue, queues=",".join(outcome.paused),
                              reason=reason, cooldown_s=outcome.cooldown_s, recorded=True, **event_context)
            self.pauses.invalidate()
            self.broadcast_reconcile(pause=list(outcome.paused))
        if outcome.escalated:
            self.emit("escalation", domain=domain.name, child=child.queue,
                              reason="supervisor_budget_exceeded", supervisor_restarts=outcome.supervisor_restarts,
                              cooldown_s=outcome.cooldown_s, recorded=True, **event_context)
        if outcome.recycle_generation and not recycle_current_process():
            log_event(logging.INFO, "recycle-unsupported", logger, domain=domain.name,
                      detail="this pool runs tasks in the worker process; in-process state is not reset")

    def after_success(self, task: AnyTask, request: object = None) -> None:
        """A supervised task succeeded: if its child caused rest_for_one pauses, end them; if it is the re-run of
        a crash, record its remediation as one that worked. ``request`` is ``task.request`` (looked up when not
        given).

        Costs nothing unless this process's pause view (refreshed once per
        period) shows a pause caused by this child.
        """
        pauses = self.pauses.current()
        located = self.locate(task) if pauses else None
        if located is not None:
            queue = located[1].queue
            cause = rest_cause(queue)
            if any(cause in p.causes for p in pauses.values()):
                self.resume_after_success(queue)
                self.pauses.invalidate()
        if request is None:
            request = task.request
        tracking = getattr(request, HEADER, None)
        if isinstance(tracking, dict) and self.learning is not None:
            self.learning.succeeded(tracking, str(getattr(request, "id", "")))  # only tasks that had crashed

    def resume_after_success(self, queue: str) -> list[str]:
        """A child succeeded: end the rest_for_one pauses it caused (one ``DEL`` of the records it owns)."""
        located = self.supervisor.locate(queue)
        if located is None:
            return []
        domain = located[0]
        later = list(domain.queues[domain.queues.index(queue) + 1:])
        if not later:
            return []
        ended = clear_pauses(self.store, self.keys, self.supervisor, later,
                             causes=[rest_cause(queue)])
        if ended:
            self.emit("resume", domain=domain.name, queues=",".join(later), reason="child_recovered",
                              child=queue, at=time.time())
            self.broadcast_reconcile(pause=[])
        return later if ended else []

