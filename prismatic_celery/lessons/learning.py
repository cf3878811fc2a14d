"""Applying lessons: the bridge between the engine and the lesson store and knowledge metrics.

* ``lookup``: a crash whose fingerprint has a lesson whose remediation worked
  (``prismatic_lesson_min_observations`` outcomes, success rate at least
  ``prismatic_lesson_min_success_rate``) gets that remediation, ahead of the
  default rules; a user rule still pins its action.
* ``crashed`` / ``succeeded`` / ``failed_for_good``: record what happened, so
  the lessons and the knowledge metrics come from real outcomes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..log import get_logger, log_event
from ..remediation.actions import ACTIONS, Action, CircuitBreak, RetryWithBackoff
from ..remediation.defaults import DEFAULT_RULES
from ..remediation.rules import Decision
from .metrics import MetricsRecorder
from .store import LessonStore

if TYPE_CHECKING:
    from ..engine.crash import Crash
    from ..runtime import Runtime

__all__ = ["LESSON_RULE", "Learning"]

logger = get_logger("lessons")
LESSON_RULE = "lesson"
_DEFAULT_NAMES = frozenset(r.name for r in DEFAULT_RULES)


class Learning:
    """Lessons and knowledge metrics of one app."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.lessons = LessonStore(runtime.store, runtime.keys, max_lessons=settings.lessons_max)
        self.metrics = MetricsRecorder(runtime.store, runtime.keys)
        self.min_observations = settings.lesson_min_observations
        self.min_success_rate = settings.lesson_min_success_rate

    def lookup(self, crash: Crash, ruled: Decision) -> Decision:
        """The learned remediation for ``crash``, else ``ruled`` (a user rule always wins)."""
        if ruled.rule_name is not None and ruled.rule_name not in _DEFAULT_NAMES:
            return ruled  # an explicit rule pins its action
        best = self.lessons.best_remediation(crash.fingerprint, min_observations=self.min_observations,
                                             min_success_rate=self.min_success_rate)
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

    def crashed(self, crash: Crash, *, remediation: str | None, escalated: bool) -> None:
        """Record the crash in its lesson and the metrics: the remediation applied (a re-run), if any,
        and whether it escalated to operators."""
        lesson = self.lessons.record_crash(crash.fp, task=crash.task_name, domain=crash.domain.name,
                                           failure_class=crash.failure_class, exc_type=crash.exc_type,
                                           message=crash.message)
        self.metrics.crash(crash.task_id, lesson.count > 1)
        if remediation is not None:
            self.metrics.remediated(crash.task_id, remediation)
        if escalated:
            self.metrics.escalated(crash.task_id)

    def succeeded(self, tracking: dict[str, Any], task_id: str) -> None:
        """A task that had crashed succeeded: its last remediation worked."""
        fp, action = tracking.get("fp"), tracking.get("action")
        if isinstance(fp, str) and isinstance(action, str):
            self.lessons.record_outcome(fp, action, True)
        self.metrics.succeeded(task_id)

    def failed_for_good(self, crash: Crash) -> None:
        """The message will not run again: its last remediation (if any) did not work."""
        if crash.remediations:
            self.lessons.record_outcome(crash.fingerprint, crash.remediations[-1], False)
        self.metrics.failed_for_good(crash.task_id)
