"""The OTP semantics on real workers and a real Redis (issue: supervision engine).

Given two workers sharing one tree, when a supervised task crashes, then the
domain's strategy is enacted on every worker, budgets pause and escalate, and
no message is lost or run twice.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.supervision.pauses import Pause, clear_pauses, set_pause
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.integration.conftest import basic_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration



def _consuming(app: Celery, hostnames: list[str]) -> dict[str, set[str]]:
    replies = app.control.inspect(destination=hostnames, timeout=1).active_queues() or {}
    return {h: {q["name"] for q in queues} for h, queues in replies.items()}



REST = {"prismatic_backoff_initial_s": 2.0, "prismatic_backoff_max_s": 2.0, "prismatic_backoff_jitter_s": 0}
DEPLOY = 25  # storage messages that each fail once (a bad deploy): the child fails by rate at 20 executions


def test_rest_for_one_pauses_later_children_on_every_worker_and_resumes_in_order(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Storage fails at a high rate: cache and telemetry pause on both workers until storage succeeds again, then
    resume in order; nothing lost or doubled; one restart."""
    app = make_app(redis_url, namespace, **REST)
    hosts = [f"a-{namespace}@test", f"b-{namespace}@test"]
    env = basic_env(redis_url, namespace, REST)
    with WorkerProcess("tests.apps.basic", hostname=hosts[0], pool="prefork", concurrency=2, env=env, cwd=ROOT) as w1, \
            WorkerProcess("tests.apps.basic", hostname=hosts[1], pool="solo", env=env, cwd=ROOT) as w2:
        w1.wait_ready(app)
        w2.wait_ready(app)
        assert all({"storage", "cache", "telemetry"} <= q for q in _consuming(app, hosts).values())

        crashing = [app.tasks["basic.flaky"].apply_async((f"s{i}", 1), queue="storage") for i in range(DEPLOY)]
        wait_for(lambda: all(not ({"cache", "telemetry"} & q) and "storage" in q
                             for q in _consuming(app, hosts).values()) and len(_consuming(app, hosts)) == 2,
                 timeout_s=10, message="cache and telemetry paused on both workers")

        waiting = [app.tasks["basic.record"].apply_async((f"c{i}",), queue="cache") for i in range(10)]
        waiting += [app.tasks["basic.record"].apply_async((f"t{i}",), queue="telemetry") for i in range(5)]
        wait_for(lambda: client.llen("cache") == 10 and client.llen("telemetry") == 5, timeout_s=5,
                 message="paused messages wait in the broker")
        assert not any(client.get(f"runs:c{i}") for i in range(10))

        assert [r.get(timeout=30) for r in crashing] == [2] * DEPLOY, "every storage message succeeds on its re-run"
        wait_for(lambda: all({"cache", "telemetry"} <= q for q in _consuming(app, hosts).values()),
                 timeout_s=10, message="both workers resume cache and telemetry")
        assert [r.get(timeout=30) for r in waiting] == [f"c{i}" for i in range(10)] + [f"t{i}" for i in range(5)]
        for key in [f"c{i}" for i in range(10)] + [f"t{i}" for i in range(5)] + [f"s{i}" for i in range(DEPLOY)]:
            assert client.get(f"runs:{key}") == "1", key
        assert all(client.get(f"attempts:s{i}") == "2" for i in range(DEPLOY))
        for worker in (w1, w2):
            log = worker.log
            assert "queue-paused" in log
            assert log.index("queue-resumed queue=cache") < log.index("queue-resumed queue=telemetry"), worker
        restarts = client.hgetall(Keys(namespace).key("restart-totals"))
        assert restarts == {"storage": "1"}


def test_a_worker_started_during_a_pause_does_not_consume_the_paused_queue(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """The pause record in Redis is the truth: a late worker converges to it within one period, and to its end.

    The pause lasts far longer than any start-up (a busy machine may take many seconds to start a worker): it
    ends when the test removes its record, after the worker was seen ready and holding the queue, with no
    broadcast, so only the worker's own periodic read can resume the queue."""
    app = make_app(redis_url, namespace)
    keys = Keys(namespace)
    store = app_store(app)
    now = time.time()
    set_pause(store, keys, Pause("cache", "core", "manual", "test", now, now + 300))
    host = f"late-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=host, pool="solo", env=basic_env(redis_url, namespace, {}),
                       cwd=ROOT) as worker:
        worker.wait_ready(app, timeout_s=60)
        wait_for(lambda: host in _consuming(app, [host]) and "cache" not in _consuming(app, [host])[host]
                 and "storage" in _consuming(app, [host])[host], timeout_s=20,
                 message="the late worker consumes its queues but cache")
        held = app.tasks["basic.record"].apply_async(("late",), queue="cache")
        wait_for(lambda: client.llen("cache") == 1, timeout_s=10, message="message waits in the broker")
        assert client.get("runs:late") is None
        runtime = get_runtime(app)
        assert runtime is not None and clear_pauses(store, keys, runtime.supervisor, ["cache"]) == 1
        assert held.get(timeout=30) == "late", "it runs once the pause ends"
        assert client.get("runs:late") == "1"


def app_store(app: Celery) -> Any:
    runtime = get_runtime(app)
    assert runtime is not None
    return runtime.store


ALL = {"prismatic_backoff_initial_s": 0.2, "prismatic_backoff_max_s": 0.2, "prismatic_backoff_jitter_s": 0,
       "prismatic_recycle_pause_s": 1.5}


def test_one_for_all_recycles_the_domains_pool_processes_and_resumes(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """A crash in evo pauses both its children, replaces the pool processes that served it, then resumes."""
    app = make_app(redis_url, namespace, **ALL)
    host = f"evo-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2,
                       extra_args=["--domain", "evo"], env=basic_env(redis_url, namespace, ALL), cwd=ROOT) as worker:
        worker.wait_ready(app)
        before = set(worker.pool_pids())
        assert len(before) == 2
        served = {app.tasks["basic.pid"].apply_async(queue=q).get(timeout=10) for q in ("mendel", "fitness") * 4}
        assert served <= before
        # every mendel message fails once: 20 failures make the child fail by rate
        results = [app.tasks["basic.flaky"].apply_async((f"evo{i}", 1), queue="mendel") for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [2] * 20
        wait_for(lambda: "pool-recycled domain=evo" in worker.log, timeout_s=10, message="pool recycled")
        wait_for(lambda: len(set(worker.pool_pids()) - before) == 2 and len(worker.pool_pids()) == 2,
                 timeout_s=15, message="two new pool processes")
        after = {app.tasks["basic.pid"].apply_async(queue=q).get(timeout=10) for q in ("mendel", "fitness") * 4}
        assert not (after & before), "every task now runs in a fresh process"
        assert {"mendel", "fitness"} <= _consuming(app, [host])[host]
        assert all(client.get(f"runs:evo{i}") == "1" for i in range(20))


BUDGET = {"prismatic_backoff_initial_s": 0.1, "prismatic_backoff_max_s": 0.1, "prismatic_backoff_jitter_s": 0,
          "prismatic_domain_budget": {"max_restarts": 2, "period_s": 60},
          "prismatic_supervisor_budget": {"max_restarts": 1, "period_s": 300},
          "prismatic_cooldown_initial_s": 2, "prismatic_cooldown_max_s": 30}
BAD_DEPLOY = 160  # sources messages that always fail: a restart every 20, an overrun every third, escalation


def test_budget_overrun_pauses_only_that_domain_and_the_second_escalates(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """osint's child keeps failing: its domain exceeds its budget and alone pauses while core keeps completing; the
    next overrun escalates (the one CRITICAL line)."""
    app = make_app(redis_url, namespace, **BUDGET)
    host = f"budget-{namespace}@test"
    celery_events: list[dict[str, Any]] = []
    listening = threading.Event()

    def capture() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"supervision-escalation": celery_events.append,
                                                           "supervision-pause": celery_events.append})
            listening.set()
            with contextlib.suppress(Exception):  # the capture ends by timeout
                receiver.capture(limit=None, timeout=40, wakeup=False)

    threading.Thread(target=capture, daemon=True).start()
    listening.wait(5)
    with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2,
                       env=basic_env(redis_url, namespace, BUDGET), cwd=ROOT) as worker:
        worker.wait_ready(app)
        failing = [app.tasks["basic.fetch_fail"].apply_async((f"bad deploy {i}",), queue="sources")
                   for i in range(BAD_DEPLOY)]
        wait_for(lambda: "sources" not in _consuming(app, [host]).get(host, {"sources"}), timeout_s=10,
                 message="osint paused after its budget")
        done = [app.tasks["basic.record"].apply_async((f"core{i}",), queue="cache") for i in range(20)]
        assert [r.get(timeout=20) for r in done] == [f"core{i}" for i in range(20)], "core keeps completing"
        events = Keys(namespace).key("events")
        wait_for(lambda: any(f.get("type") == "escalation" and f.get("reason") == "supervisor_budget_exceeded"
                             for _, f in client.xrange(events)), timeout_s=30,
                 message="escalation after the second overrun")
        wait_for(lambda: "supervision-escalation" in worker.log and "CRITICAL" in worker.log, timeout_s=5,
                 message="CRITICAL escalation log line")
        escalation = json.loads(client.get(Keys(namespace).key("escalation", "osint")) or "{}")
        assert escalation["reason"] == "supervisor_budget_exceeded"
        wait_for(lambda: any(e["type"] == "supervision-escalation" for e in celery_events), timeout_s=10,
                 message="the supervision-escalation Celery event")
        wait_for(lambda: any(e["type"] == "supervision-escalation" and e["reason"] == "supervisor_budget_exceeded"
                             for e in celery_events), timeout_s=10, message="the domain's escalation Celery event")
        sent = [e for e in celery_events if e["type"] == "supervision-escalation"]
        assert [e["reason"] for e in sent] == ["unknown_failure_pattern", "supervisor_budget_exceeded"], \
            "one escalation for the new failure pattern (not one per message), one for the domain"
        assert sent[1]["domain"] == "osint"
        critical = [line for line in worker.log.splitlines() if "CRITICAL" in line]
        assert len(critical) == 1 and "supervisor_budget_exceeded" in critical[0], critical
        assert client.hgetall(Keys(namespace).key("restart-totals")).get("cache") is None
        for result in failing:
            result.revoke()
