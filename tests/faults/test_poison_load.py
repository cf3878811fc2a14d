"""Poison messages and crash loops under load: several os._exit tasks among hundreds of normal ones.

Given two prefork workers consuming one queue, when 6 poison messages (each kills the pool
process running it) are mixed into 300 normal messages, then each poison message is delivered
exactly ``prismatic_quarantine_deliveries`` (3) times, counted across both workers, and then
quarantined in the dead-letter queue, while every normal message completes exactly once and
every death is recorded as a failed execution of the child (18 among 318 executions: the child
itself never fails).

A process that dies right after starting a poison message can die before the worker read its
"accepted" message; billiard then sends the job to another process without a WorkerLostError.
The plugin counts that death too (prismatic_celery/supervision/slots.py), so the count is exact.
"""

from __future__ import annotations

import time

import pytest
import redis

from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import wait_for
from tests.conftest import failure_events
from tests.faults.apps import make_faults_app
from tests.faults.conftest import faults_env, worker

pytestmark = pytest.mark.integration

POISON, NORMAL, DELIVERIES = 6, 300, 3
CONF = {"task_reject_on_worker_lost": True, "prismatic_quarantine_deliveries": DELIVERIES}


def test_poison_messages_are_quarantined_after_exactly_n_deliveries_under_load(
    redis_url: str, namespace: str, ledger: redis.Redis
) -> None:
    """6 poison among 300 normal on one queue, two workers: 3 deliveries each then DLQ; normal ones once."""
    app = make_faults_app(redis_url, namespace, redis_url, redis_url, **CONF)
    runtime = get_runtime(app)
    assert runtime is not None
    env = faults_env(redis_url, namespace, redis_url, store=redis_url, conf=CONF)
    with worker(namespace, env, name="p1") as w1, worker(namespace, env, name="p2") as w2:
        w1.wait_ready(app)
        w2.wait_ready(app)
        started = time.monotonic()
        every = NORMAL // POISON
        poison, normal = [], []
        for i in range(NORMAL):
            if i % every == 0:
                poison.append(app.tasks["basic.poison"].apply_async((f"p{len(poison)}",), queue="monitor"))
            normal.append(app.tasks["basic.record"].apply_async((f"n{i}",), queue="monitor"))
        assert [r.get(timeout=90) for r in normal] == [f"n{i}" for i in range(NORMAL)]
        wait_for(lambda: runtime.dlq.count("osint") == POISON, timeout_s=60, interval_s=0.2,
                 message="every poison message quarantined")
        elapsed = time.monotonic() - started
        degraded = any("store-unavailable" in w.log for w in (w1, w2))
        for i, result in enumerate(poison):
            delivered = int(ledger.get(f"runs:p{i}") or 0)
            assert delivered == DELIVERIES, (i, delivered, [
                line for w in (w1, w2) for line in w.log.splitlines() if result.id in line])
            letter = runtime.dlq.get("osint", result.id)
            assert letter is not None and letter["attempts"] == DELIVERIES and letter["replayable"] is True
            assert letter["reason"] == f"quarantined: killed its pool process {DELIVERIES} times"
            assert letter["task"] == "basic.poison" and letter["args"] == [f"p{i}"] and letter["queue"] == "monitor"
            assert ledger.exists(Keys(namespace).key("deaths", result.id)) == 0
            assert result.state == "FAILURE" and "Quarantined" in repr(result.result)
        assert all(ledger.get(f"runs:n{i}") == "1" for i in range(NORMAL)), "every normal message exactly once"
        assert ledger.llen("order") == NORMAL
        deaths = failure_events(ledger, namespace, "monitor", "WorkerLostError")
        assert degraded or len(deaths) == POISON * DELIVERIES, len(deaths)
        totals = ledger.hgetall(Keys(namespace).key("restart-totals"))
        assert totals == {}, f"18 deaths among 318 executions are message failures, not a child failure: {totals}"
        assert ledger.llen("monitor") == 0
        served = sum("reason=\"quarantined" in w.log for w in (w1, w2))
        assert served >= 1
    print(f"\n{POISON} poison x {DELIVERIES} deliveries among {NORMAL} normal messages on 2 workers: "
          f"all done and quarantined in {elapsed:.1f}s; deaths recorded {len(deaths)}; store degraded: {degraded}")
