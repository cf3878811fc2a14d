"""Applying lessons: the bridge between the engine and the lesson store and knowledge metrics.

* ``record``: count a crash in its lesson (the crash path's first round trip) and return
  the lesson, which ``lookup`` then reads without another round trip.
* ``lookup``: a crash whose fingerprint has a lesson whose remediation worked
  (``prismatic_lesson_min_observations`` outcomes, success rate at least
  ``prismatic_lesson_min_success_rate``) gets that remediation, ahead of the
  default rules; a user rule still pins its action.
* ``calls`` / ``succeeded``: what happened, as script calls the engine batches into one
  round trip, so the lessons and the knowledge metrics come from real outcomes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..log import get_logger, log_event
from ..remediation.actions import ACTIONS, Action, CircuitBreak, RetryWithBackoff
from ..remediation.defaults import DEFAULT_RULE_NAMES
from ..remediation.rules import Decision
from ..store.base import ScriptCall
from .metrics import MetricsRecorder
from .store import Lesson, LessonStore, best_action

if TYPE_CHECKING:
    from ..engine.crash import Crash
    from ..runtime import Runtime

__all__ = ["LESSON_RULE", "Learning"]

logger = get_logger("lessons")
LESSON_RULE = "lesson"


class Learning:
    """Lessons and knowledge metrics of one app."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.lessons = LessonStore(runtime.store, runtime.keys, max_lessons=settings.lessons_max)
        self.metrics = MetricsRecorder(runtime.store, runtime.keys)
        self.min_observations = settings.lesson_min_observations
        self.min_success_rate = settings.lesson_min_success_rate

    def record(self, crash: Crash) -> Lesson:
        """Count the crash in its lesson (one round trip) and return the lesson as stored."""
        return self.lessons.record_crash(crash.fp, task=crash.task_name, domain=crash.domain.name,
                                         failure_class=crash.failure_class, exc_type=crash.exc_type,
                                         message=crash.message)

    def lookup(self, crash: Crash, ruled: Decision, lesson: Lesson | None) -> Decision:
        """The learned remediation for ``crash``, else ``ruled`` (a user rule always wins)."""
        if lesson is None or (ruled.rule_name is not None and ruled.rule_name not in DEFAULT_RULE_NAMES):
            return ruled  # an explicit rule pins its action
        best = best_action(lesson, min_observations=self.min_observations, min_success_rate=self.min_success_rate)
        action = self._action(best, ruled.action) if best else None
        if action is None:
            return ruled
        log_event(logging.INFO, "lesson-applied", logger, fingerprint=crash.fingerprint, action=action.name,
                  task=crash.task_name)
        return Decision(LESSON_RULE, action)

    def _action(self, name: str, ruled: Action) -> Action | None:
        """A registered action from a stored name (stored data never selects anything else)."""
        if name == ruled.name:
            return ruled  # keep the rule's parameters
        cls = ACTIONS.get(name)
        if cls is None:
            return None
        if cls is RetryWithBackoff:
            return self.runtime.engine.backoff
        if cls is CircuitBreak:
            return None  # needs a target only a rule knows
        try:
            return cls()
        except Exception:  # an action that needs parameters cannot come from a bare name
            return None

    def calls(self, crash: Crash, *, known: bool, remediation: str | None, dead_lettered: bool,
              final: bool) -> list[ScriptCall]:
        """The crash's facts as script calls: counted, remediated (a re-run), dead-lettered, given up for good
        (its last remediation did not work)."""
        metrics = self.metrics
        calls = [metrics.crash_call(crash.task_id, known)]
        if remediation is not None:
            calls.append(metrics.remediated_call(crash.task_id, remediation))
        if dead_lettered:
            calls.append(metrics.count_call(crash.task_id, "dead_letters"))
        if final:
            if crash.remediations:
                outcome = self.lessons.outcome_call(crash.fingerprint, crash.remediations[-1], False)
                calls.extend([outcome] if outcome is not None else [])
            calls.append(metrics.failed_call(crash.task_id))
        return calls

    def succeeded(self, tracking: dict[str, Any], task_id: str) -> None:
        """A task that had crashed succeeded: its last remediation worked (one round trip)."""
        fp, action = tracking.get("fp"), tracking.get("action")
        calls = [self.metrics.succeeded_call(task_id)]
        if isinstance(fp, str) and isinstance(action, str) and action:
            outcome = self.lessons.outcome_call(fp, action, True)
            calls.extend([outcome] if outcome is not None else [])
        replies = self.runtime.store.run_many(calls)
        self.metrics.reply(calls[0], replies[0] if replies else None)
