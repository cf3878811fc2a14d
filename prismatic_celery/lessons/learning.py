"""Applying lessons: the bridge between the engine, the lesson store and the knowledge metrics.

* ``record``: count a crash in its lesson together with the outcome of the attempt it ends
  (the crash path's first round trip) and return the lesson, which ``lookup`` then reads
  without another round trip;
* ``lookup``: the remediation for a crash: a user rule pins its action; else what an operator
  taught; else the lesson's choice among the candidates (:mod:`.ladder`); else the rules';
* ``calls`` / ``succeeded``: what happened, as script calls the engine batches into one round
  trip, so lessons and knowledge metrics come from real outcomes, one per attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..log import get_logger, log_event
from ..remediation.actions import RetryWithBackoff
from ..remediation.defaults import DEFAULT_RULE_NAMES
from ..remediation.rules import Decision
from ..store.base import ScriptCall
from .ladder import CIRCUIT_OPEN_MS, RERUN_ACTIONS, ChoicePolicy, candidates, choose, knows, process_random
from .metrics import MetricsRecorder
from .store import Lesson, LessonStore, taught_action

if TYPE_CHECKING:
    from ..circuits import Circuits
    from ..config import Settings
    from ..store import Store
    from ..store.keys import Keys
    from ..supervision.crash import Crash

__all__ = ["LESSON_RULE", "OPERATOR_REPLAY", "Learning"]

logger = get_logger("lessons")
LESSON_RULE = "lesson"
#: The label under which an operator's successful replay of a dead letter is recorded in its lesson.
OPERATOR_REPLAY = "operator_replay"


class Learning:
    """Lessons and knowledge metrics of one app."""

    def __init__(self, store: Store, keys: Keys, settings: Settings, circuits: Circuits) -> None:
        self.store = store
        self.circuits = circuits
        self.lessons = LessonStore(store, keys, max_lessons=settings.lessons_max)
        self.metrics = MetricsRecorder(store, keys)
        self.policy = ChoicePolicy(
            min_observations=settings.lesson_min_observations, min_success_rate=settings.lesson_min_success_rate,
            exploration=settings.lesson_exploration, demotion_s=settings.lesson_demotion_s,
        )
        self.random = process_random()

    def record(self, crash: Crash) -> Lesson:
        """Count the crash in its lesson and, when it ends a re-run, that remediation's failure (one round trip)."""
        before: list[ScriptCall] = []
        if crash.previous is not None:
            outcome = self.lessons.outcome_call(crash.previous[0], crash.previous[1], False, when=crash.at)
            before += [outcome] if outcome is not None else []
        return self.lessons.record_crash(crash.fp, task=crash.task_name, domain=crash.domain.name,
                                         failure_class=crash.failure_class, exc_type=crash.exc_type,
                                         message=crash.message, before=before)

    def knows(self, lesson: Lesson | None) -> bool:
        """Whether ``lesson`` holds a remediation known to work (its crash is a known-pattern crash)."""
        return knows(lesson, self.policy, time.time())

    def lookup(self, crash: Crash, ruled: Decision, lesson: Lesson | None, *, backoff: RetryWithBackoff) -> Decision:
        """The remediation for ``crash`` (see the module docstring); ``ruled`` is what the rules say."""
        if lesson is None or (ruled.rule_name is not None and ruled.rule_name not in DEFAULT_RULE_NAMES):
            return ruled  # an explicit rule pins its action
        taught = taught_action(lesson.taught)
        if taught is not None:
            return self._applied(crash, Decision(f"{LESSON_RULE}.taught", taught))
        if ruled.matched and ruled.action.name not in RERUN_ACTIONS:
            return ruled  # a built-in rule that ends the message (a full disk) is followed as it is
        options = candidates(ruled.action if ruled.matched else None, crash.failure_class, backoff=backoff,
                             circuits=crash.circuits, circuit_ms=self._circuit_ms(crash.circuits))
        choice = choose(options, lesson, tried=crash.remediations, policy=self.policy, now=time.time(),
                        rng=self.random)
        if choice is None or (ruled.matched and choice.reason == "ladder" and choice.action == ruled.action):
            return ruled
        return self._applied(crash, Decision(f"{LESSON_RULE}.{choice.reason}", choice.action))

    def _applied(self, crash: Crash, decision: Decision) -> Decision:
        # DEBUG: the crash's own line (remediation, dead letter) already names the lesson's choice (rule=lesson.*)
        log_event(logging.DEBUG, "lesson-applied", logger, fingerprint=crash.fingerprint,
                  action=decision.action.label, rule=decision.rule_name, task=crash.task_name)
        return decision

    def _circuit_ms(self, circuits: tuple[str, ...]) -> int:
        """How long the ``circuit_break`` candidate keeps the task's first circuit open: its reset timeout."""
        if not circuits or circuits[0] not in self.circuits:
            return CIRCUIT_OPEN_MS
        timeout = getattr(self.circuits.get(circuits[0]), "reset_timeout", None)
        return int(timeout * 1000) if isinstance(timeout, (int, float)) and timeout > 0 else CIRCUIT_OPEN_MS

    def calls(self, crash: Crash, *, known: bool, recurring: bool, remediation: str | None, dead_lettered: bool,
              final: bool) -> list[ScriptCall]:
        """The crash's facts as script calls: counted, remediated (a re-run), dead-lettered, given up for good."""
        metrics = self.metrics
        calls = [metrics.crash_call(crash.task_id, known, recurring=recurring)]
        if remediation is not None:
            calls.append(metrics.remediated_call(crash.task_id, remediation))
        if dead_lettered:
            calls.append(metrics.count_call(crash.task_id, "dead_letters"))
        if final:
            calls.append(metrics.failed_call(crash.task_id))
        return calls

    def succeeded(self, tracking: Mapping[str, object], task_id: str) -> None:
        """A re-run (or an operator's replay) succeeded: its remediation worked for its fingerprint (one round trip)."""
        fp, action = tracking.get("fp"), tracking.get("action")
        label = tracking.get("label") or action
        applied = tracking.get("applied_at")
        applied_at = float(applied) if isinstance(applied, (int, float)) and not isinstance(applied, bool) else None
        now = time.time()
        calls = [self.metrics.succeeded_call(task_id, applied_at=applied_at, known=tracking.get("known") is True,
                                             action=action if isinstance(action, str) else "")]
        if isinstance(fp, str) and isinstance(label, str) and label:
            recovery = now - applied_at if applied_at is not None else None
            outcome = self.lessons.outcome_call(fp, label, True, recovery_s=recovery)
            calls.extend([outcome] if outcome is not None else [])
        replies = self.store.run_many(calls)
        self.metrics.reply(calls[0], replies[0] if replies else None)
