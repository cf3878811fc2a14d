"""LessonsLearned on a real worker: the same mix of faults twice; metrics equal the test's own counts.

Given a supervised app, when a mix of faults runs twice, then on the second
pass the known patterns are remediated from their lessons, and every
knowledge metric equals what this test counted itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.integration.conftest import basic_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

# Fast re-runs; no exploration, so that which remediation each crash gets is exact (exploration has its own tests).
CONF = {"prismatic_backoff_initial_s": 0.1, "prismatic_backoff_max_s": 0.2, "prismatic_backoff_jitter_s": 0,
        "prismatic_max_restarts_per_message": 2, "prismatic_lesson_exploration": 0.0}
FLAKY, FRAGILE, DOOMED = 4, 2, 1



def _run_pass(app: Any, tag: str) -> None:
    """One pass: flaky tasks (fail once, then succeed), fragile ones (unknown error), a doomed one.

    Keys differ only in digits, so the same bug on different data shares one fingerprint."""
    flaky = [app.tasks["basic.flaky"].apply_async((f"{tag}k{i}", 1), queue="storage") for i in range(FLAKY)]
    fragile = [app.tasks["basic.fragile"].apply_async((f"{tag}f{i}",), queue="cache") for i in range(FRAGILE)]
    doomed = [app.tasks["basic.fetch_eta"].apply_async((f"{tag}d{i}",)) for i in range(DOOMED)]
    assert [r.get(timeout=30) for r in flaky] == [2] * FLAKY
    for result in fragile:
        with pytest.raises(LookupError):
            result.get(timeout=30)
    for result in doomed:
        with pytest.raises(ConnectionError):
            result.get(timeout=30)


def test_the_second_pass_applies_lessons_and_metrics_equal_our_counts(redis_url: str, namespace: str) -> None:
    """Counts made here: crashes, known patterns, remediations, recoveries, escalations, dead letters, false
    positives."""
    app = make_app(redis_url, namespace, **CONF)
    runtime = get_runtime(app)
    assert runtime is not None and runtime.learning is not None
    host = f"lessons-{namespace}@test"
    # One pool process: a recycle's re-run always runs in the fresh process that replaced the crashed one. With
    # two, it may land in the older sibling, where its failure is (rightly) no trial of the recycle, and the
    # recycle's count below would depend on which process was free.
    with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=1,
                       env=basic_env(redis_url, namespace, CONF), cwd=ROOT) as worker:
        worker.wait_ready(app)
        _run_pass(app, "1")
        assert "rule=lesson.best" not in worker.log, "nothing is proven before the first pass"
        _run_pass(app, "2")
        wait_for(lambda: "rule=lesson.best" in worker.log, timeout_s=5, message="a proven remediation on pass two")

    per_pass_crashes = FLAKY * 1 + FRAGILE * 1 + DOOMED * (CONF["prismatic_max_restarts_per_message"] + 1)
    crashes = 2 * per_pass_crashes
    fingerprints = 3  # flaky, fragile, doomed: the same bug on different data groups together
    # flaky: one backoff each; doomed: the rule's backoff, then the next rung of the ladder (a fresh process)
    remediations = 2 * (FLAKY + DOOMED * CONF["prismatic_max_restarts_per_message"])
    escalations = 1  # the fragile failure is a new pattern once; the doomed one runs out of re-runs (a dead letter)
    dead_letters = 2 * (FRAGILE + DOOMED)
    metrics = runtime.learning.metrics.snapshot()
    assert metrics.crashes == crashes
    assert metrics.recurring_crashes == crashes - fingerprints
    assert metrics.remediations_applied == remediations
    assert metrics.remediations_by_action == {"retry_with_backoff": 2 * (FLAKY + DOOMED), "recycle_process": 2 * DOOMED}
    assert metrics.recoveries == 2 * FLAKY
    # Known-pattern crashes are those whose lesson already held a proven remediation: every flaky crash of pass
    # two (and any of pass one that came after three recoveries); each of them recovered on its re-run.
    assert FLAKY <= metrics.known_pattern_crashes == metrics.auto_remediated <= 2 * FLAKY - 3
    assert metrics.escalations == escalations and metrics.dead_letters == dead_letters
    assert metrics.failed_for_good == 2 * (FRAGILE + DOOMED)
    assert metrics.false_positives == 2 * DOOMED * CONF["prismatic_max_restarts_per_message"]
    assert metrics.total_lessons == fingerprints
    assert metrics.mean_time_to_recovery_s is not None and 0.05 <= metrics.mean_time_to_recovery_s < 10
    assert metrics.attempts_per_recovery == 1.0
    lessons = runtime.learning.lessons.all()
    flaky_lesson = next(lesson for lesson in lessons if lesson.exc_type == "ConnectionError"
                        and "attempt" in lesson.message)
    assert flaky_lesson.failure_class == "external_dependency"
    assert flaky_lesson.remediations["retry_with_backoff(100,200,0)"].succeeded == 2 * FLAKY
    doomed = next(lesson for lesson in lessons if "dependency down" in lesson.message)
    assert {label: stats.failed for label, stats in doomed.remediations.items()} == {
        "retry_with_backoff(100,200,0)": 2, "recycle_process": 2}
    raw = redis.Redis.from_url(redis_url, decode_responses=True).get(
        Keys(namespace).key("lesson", flaky_lesson.fingerprint))
    assert raw is not None and json.loads(raw)["count"] == 2 * FLAKY
