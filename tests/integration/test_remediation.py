"""Remediation on real workers: backoff schedules, crash-loop quarantine, dead letters replayed once.

Given a supervised app and a real worker, when tasks fail in known and unknown
ways, then the chosen remediation is enacted and nothing is lost or run twice.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path

import pytest
import redis

from prismatic_celery.remediation import RetryWithBackoff
from prismatic_celery.remediation.backoff import delay_bounds
from prismatic_celery.runtime import get_runtime
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.integration.conftest import basic_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration




SCHEDULE = {"action": "retry_with_backoff", "initial_ms": 300, "max_ms": 1200, "jitter_ms": 150}
BACKOFF_CONF = {
    "prismatic_remediation_rules": [
        {"name": "eta-test", "match": {"exceptions": ["ConnectionError"], "task": "basic.fetch_eta"},
         "action": SCHEDULE},
    ],
    "prismatic_max_restarts_per_message": 4,
}


def test_retry_delays_follow_the_configured_schedule(redis_url: str, namespace: str, client: redis.Redis) -> None:
    """Each re-run's ETA is its crash time plus a delay within the schedule's bounds for that attempt."""
    app = make_app(redis_url, namespace, **BACKOFF_CONF)
    host = f"eta-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2,
                       env=basic_env(redis_url, namespace, BACKOFF_CONF), cwd=ROOT) as worker:
        worker.wait_ready(app)
        result = app.tasks["basic.fetch_eta"].delay("k1")
        with pytest.raises(ConnectionError):
            result.get(timeout=30)
        runs = [json.loads(r) for r in client.lrange("eta:k1", 0, -1)]
        assert [r["reruns"] for r in runs] == [0, 1, 2, 3, 4], "4 re-runs, then the failure is final"
        assert [r["retries"] for r in runs] == [0] * 5, "Celery's retry count is the task's own"
        action = RetryWithBackoff(initial_ms=300, max_ms=1200, jitter_ms=150)
        for previous, current in itertools.pairwise(runs):
            eta = datetime.fromisoformat(current["eta"]).timestamp()
            delay = eta - previous["started"]
            low, high = delay_bounds(action, current["reruns"])
            # the ETA counts from the crash's decision, after the run and its store round trips: on a busy
            # machine that takes a few hundred milliseconds after the run's start
            assert low <= delay <= high + 0.5, (current["reruns"], delay, low, high)
        runtime = get_runtime(app)
        assert runtime is not None
        wait_for(lambda: runtime.dlq.count("osint") == 1, timeout_s=5, message="dead letter")
        [letter] = runtime.dlq.list("osint")
        assert letter["reason"] == "restarts_exhausted" and letter["id"] == result.id
        assert "eta-test" in worker.log


POISON_CONF = {"task_reject_on_worker_lost": True, "prismatic_quarantine_deliveries": 3}


def test_a_poison_message_is_quarantined_after_exactly_n_deliveries(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """os._exit in the task: three deliveries, then the dead-letter queue; 200 neighbours all complete."""
    app = make_app(redis_url, namespace, **POISON_CONF)
    host = f"poison-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2,
                       env=basic_env(redis_url, namespace, POISON_CONF), cwd=ROOT) as worker:
        worker.wait_ready(app)
        poison = app.tasks["basic.poison"].apply_async(("p1",), queue="monitor")
        normal = [app.tasks["basic.record"].apply_async((f"n{i}",), queue="monitor") for i in range(200)]
        assert [r.get(timeout=60) for r in normal] == [f"n{i}" for i in range(200)]
        runtime = get_runtime(app)
        assert runtime is not None
        wait_for(lambda: runtime.dlq.get("osint", poison.id) is not None, timeout_s=30, message="quarantine")
        assert client.get("runs:p1") == "3", "exactly three deliveries"
        assert all(client.get(f"runs:n{i}") == "1" for i in range(200))
        letter = runtime.dlq.get("osint", poison.id)
        assert letter is not None and letter["reason"].startswith("quarantined") and letter["attempts"] == 3
        assert client.llen("monitor") == 0
        assert 'reason="quarantined: killed its pool process 3 times"' in worker.log


def test_a_dead_letter_is_replayed_exactly_once(redis_url: str, namespace: str, client: redis.Redis) -> None:
    """An unknown failure escalates to the dead-letter queue; once fixed, replay runs it once."""
    app = make_app(redis_url, namespace)
    host = f"replay-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=host, pool="solo", env=basic_env(redis_url, namespace, {}),
                       cwd=ROOT) as worker:
        worker.wait_ready(app)
        failed = app.tasks["basic.fragile"].apply_async(("f1",), queue="cache")
        with pytest.raises(LookupError):
            failed.get(timeout=20)
        runtime = get_runtime(app)
        assert runtime is not None
        wait_for(lambda: runtime.dlq.count("core") == 1, timeout_s=5, message="dead letter")
        [letter] = runtime.dlq.list("core")
        assert letter["reason"] == "escalated: unknown_failure_pattern" and letter["failure_class"]
        client.set("fixed:f1", "1")
        assert runtime.dlq.replay(app, "core", failed.id) == failed.id
        assert runtime.dlq.replay(app, "core", failed.id) is None, "a second replay finds nothing"
        wait_for(lambda: client.get("runs:f1") == "1", timeout_s=20, message="replayed run")
        # The body counts its run before Celery stores its result: until then the backend still holds the first
        # run's FAILURE under the same id (as plain Celery does for any re-sent message).
        wait_for(lambda: app.AsyncResult(failed.id).state == "SUCCESS", timeout_s=20, message="the replay's result")
        assert app.AsyncResult(failed.id).get(timeout=10) == "f1"
        assert runtime.dlq.count("core") == 0
        assert client.get("runs:f1") == "1"
        assert "supervision-escalation" in worker.log
