"""SIGKILL of pool children mid-task and of a whole worker mid-task.

Given supervised workers with ``task_acks_late`` and ``task_reject_on_worker_lost``, when the
pool processes running tasks are SIGKILLed (three rounds), then every message completes exactly
once or, having killed its process ``prismatic_quarantine_deliveries`` times, lands in the
dead-letter queue, and each death is recorded in Redis as a failed execution of its child (a few deaths
among many executions are message failures: the child does not restart). When a whole
worker is SIGKILLed mid-task, a new worker runs its unacknowledged messages (after the broker's
visibility timeout) exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import redis

from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import wait_for
from tests.conftest import failure_events
from tests.faults.apps import make_faults_app
from tests.faults.conftest import TRANSPORT, VISIBILITY_S, faults_env, pids_alive, worker

pytestmark = pytest.mark.integration

SLEEP_S = 1.0
CONF: dict[str, Any] = {
    "task_reject_on_worker_lost": True, "prismatic_quarantine_deliveries": 3,
    "broker_transport_options": TRANSPORT,
    "prismatic_domain_budget": {"max_restarts": 1000, "period_s": 60},
}


def _running(ledger: redis.Redis, *, started_within_s: float = 60.0) -> dict[int, str]:
    """Pool processes running a task right now (each task writes its pid on start, removes it on end), only those
    whose task started less than ``started_within_s`` ago (so it is surely still inside its sleep)."""
    now = time.time()
    found = {}
    for pid, value in ledger.hgetall("running").items():
        entry = json.loads(value)
        if now - entry["t"] < started_within_s and os.path.exists(f"/proc/{pid}"):
            found[int(pid)] = str(entry["key"])
    return found


@pytest.mark.parametrize("reject_on_worker_lost", [True, False], ids=["celery-requeues", "plugin-republishes"])
def test_killed_pool_processes_each_message_once_or_dead_lettered_and_restarts_counted(
    redis_url: str, namespace: str, ledger: redis.Redis, reject_on_worker_lost: bool
) -> None:
    """Three rounds of SIGKILL on busy pool processes: once or dead-lettered, one recorded failure per death."""
    conf = {**CONF, "task_reject_on_worker_lost": reject_on_worker_lost,
            "prismatic_backoff_initial_s": 0.1, "prismatic_backoff_max_s": 0.1, "prismatic_backoff_jitter_s": 0}
    app = make_faults_app(redis_url, namespace, redis_url, redis_url, **conf)
    work = app.tasks["faults.work"]
    runtime = get_runtime(app)
    assert runtime is not None
    env = faults_env(redis_url, namespace, redis_url, store=redis_url, conf=conf)
    with worker(namespace, env, name="kill") as w:
        w.wait_ready(app)
        results = {f"k{i}": work.apply_async((f"k{i}", SLEEP_S), queue="monitor") for i in range(16)}
        killed: list[tuple[int, str]] = []
        for _ in range(3):
            busy = wait_for(lambda: _running(ledger, started_within_s=SLEEP_S - 0.5), timeout_s=20,
                            interval_s=0.02, message="a pool process early in its task")
            for pid, key in busy.items():
                os.kill(pid, signal.SIGKILL)
                ledger.hdel("running", str(pid))
                killed.append((pid, key))
            wait_for(lambda: not pids_alive([p for p, _ in killed]), timeout_s=5, message="killed processes gone")
            time.sleep(0.3)  # let the pool replace them before the next round
        # the same message may be killed repeatedly: it must be quarantined at 3 deaths
        wait_for(lambda: all(ledger.get(f"runs:{k}") or runtime.dlq.get("osint", r.id) for k, r in results.items()),
                 timeout_s=45, interval_s=0.2, message="every message completed or dead-lettered")
        deaths_by_key: dict[str, int] = {}
        for _, key in killed:
            deaths_by_key[key] = deaths_by_key.get(key, 0) + 1
        store = redis.Redis.from_url(redis_url, decode_responses=True)
        recorded = failure_events(store, namespace, "monitor", "WorkerLostError")
        lettered = {k for k, r in results.items() if runtime.dlq.get("osint", r.id)}
        for key, result in results.items():
            runs = int(ledger.get(f"runs:{key}") or 0)
            if key in lettered:
                assert runs == 0 and deaths_by_key.get(key) == 3, (key, runs, deaths_by_key.get(key))
                letter = runtime.dlq.get("osint", result.id)
                assert letter is not None and letter["attempts"] == 3 and letter["reason"].startswith("quarantined")
                assert ledger.exists(Keys(namespace).key("deaths", result.id)) == 0, "deaths key cleared"
            else:
                assert runs == 1, f"{key} ran {runs} times"
                assert result.get(timeout=10) >= 1
                deaths = ledger.get(Keys(namespace).key("deaths", result.id))
                assert int(deaths or 0) == deaths_by_key.get(key, 0), (key, deaths, deaths_by_key.get(key))
        assert len(recorded) == len(killed), f"one failed execution per death: {len(recorded)} vs {len(killed)} kills"
        assert store.hgetall(Keys(namespace).key("restart-totals")) == {}, "a few deaths are not a child failure"
        assert ledger.llen("monitor") == 0
        assert "WorkerLostError" in w.log
    print(f"\n{len(killed)} pool processes SIGKILLed mid-task (reject_on_worker_lost={reject_on_worker_lost}); "
          f"deaths per message {sorted(deaths_by_key.values())}; dead-lettered {len(lettered)}; "
          f"failures recorded {len(recorded)}")


def test_a_killed_worker_s_messages_run_once_on_a_new_worker(
    redis_url: str, namespace: str, ledger: redis.Redis
) -> None:
    """SIGKILL of the whole worker mid-task: a new worker runs its unacked messages after the visibility timeout."""
    app = make_faults_app(redis_url, namespace, redis_url, redis_url, **CONF)
    work = app.tasks["faults.work"]
    env = faults_env(redis_url, namespace, redis_url, store=redis_url, conf=CONF)
    first = worker(namespace, env, name="doomed").start()
    try:
        first.wait_ready(app)
        results = {f"w{i}": work.apply_async((f"w{i}", 1.5), queue="storage") for i in range(6)}
        assert all(r.id for r in results.values())
        wait_for(lambda: len(_running(ledger)) == 2, timeout_s=20, message="two tasks running")
        in_flight = set(_running(ledger).values())
        first.kill()
        killed_at = time.monotonic()
    finally:
        first.kill()
    ledger.delete("running")
    with worker(namespace, env, name="heir") as heir:
        heir.wait_ready(app)
        wait_for(lambda: all(ledger.get(f"runs:{k}") for k in results), timeout_s=45, interval_s=0.2,
                 message="every message ran on the new worker")
        recovered_s = time.monotonic() - killed_at
        for key in results:
            assert ledger.get(f"runs:{key}") == "1", f"{key} ran {ledger.get(f'runs:{key}')} times"
        for key in in_flight:
            assert int(ledger.get(f"attempts:{key}") or 0) == 2, "killed mid-task, then run again once"
        assert ledger.llen("storage") == 0
    print(f"\nworker SIGKILLed with {sorted(in_flight)} mid-task; every message ran once, the last "
          f"{recovered_s:.1f}s after the kill (visibility timeout {VISIBILITY_S}s)")
