"""The supervision store (its own redis-server) goes down for 10 s while a worker runs; the broker stays up.

Given a prefork worker whose store is a private redis-server, when that server is stopped for
10 s and started again (same port, empty), then no task fails, every task runs exactly once,
crashes during the outage are still re-run with the configured backoff (decisions from
in-process state), and full supervision resumes within 2 s of the store's return.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Retry

from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import wait_for
from tests.conftest import RedisServer, failure_events, free_port, redis_answers
from tests.faults.apps import make_faults_app
from tests.faults.conftest import faults_env, worker

pytestmark = pytest.mark.integration

OUTAGE_S = 10.0
RESUME_BOUND_S = 2.0
BACKOFF_S = 0.4
CONF = {"prismatic_backoff_initial_s": 0.4, "prismatic_backoff_max_s": 0.4, "prismatic_backoff_jitter_s": 0}
QUEUES = ("storage", "cache", "telemetry", "sources", "monitor", "mendel", "fitness")


def _consuming(app: Celery, hostname: str) -> set[str]:
    replies = app.control.inspect(destination=[hostname], timeout=1).active_queues() or {}
    return {q["name"] for q in replies.get(hostname, [])}


def test_a_store_outage_loses_nothing_and_supervision_resumes_within_two_seconds(
    redis_url: str, namespace: str, redis_server: RedisServer, ledger: redis.Redis
) -> None:
    """10 s without the store: every task completes once, crashes still back off, Redis is used again in < 2 s."""
    store = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=2)
    port = redis_server.port
    app = make_faults_app(redis_url, namespace, redis_server.url, redis_url, **CONF)
    work = app.tasks["faults.work"]
    env = faults_env(redis_url, namespace, redis_url, store=redis_server.url, conf=CONF)

    def recorded(queue: str) -> int:
        """Failed executions of ``queue`` recorded in the store (each in its failure's round trip)."""
        return len(failure_events(store, namespace, queue))
    results: dict[str, Any] = {}

    def send(key: str, queue: str, fails: int = 0) -> None:
        results[key] = work.apply_async((key, 0.0, fails), queue=queue)

    with worker(namespace, env, name="outage") as w:
        registration = Keys(namespace).key("worker", w.hostname)
        w.wait_ready(app)
        wait_for(lambda: store.exists(registration), timeout_s=10, message="the worker registers in the store")
        for i, queue in enumerate(QUEUES * 3):
            send(f"before{i}", queue)
        send("crash-before", "monitor", fails=1)
        assert results["crash-before"].get(timeout=20) == 2
        wait_for(lambda: recorded("monitor") == 1, timeout_s=5, message="the failure recorded in the store")
        store.set("sentinel", "written before the outage")

        # --- the outage ---------------------------------------------------------------------------
        redis_server.stop()
        down_at = time.monotonic()
        assert not redis_answers(port)
        for i, queue in enumerate(("monitor", "storage", "mendel")):  # one_for_one, rest_for_one, one_for_all
            send(f"crash-during{i}", queue, fails=2)
        sent_during: list[tuple[str, float]] = []
        i = 0
        while time.monotonic() - down_at < OUTAGE_S:  # the scenario itself: the store stays down 10 s
            for queue in QUEUES:
                send(f"during{i}", queue)
                sent_during.append((f"during{i}", time.monotonic() - down_at))
                i += 1
            time.sleep(0.5)
        ready_in_outage = [k for k, at in sent_during if results[k].ready()]
        late = [k for k, at in sent_during if at <= OUTAGE_S - 3.0 and not results[k].ready()]
        crash_done_in_outage = [results[f"crash-during{n}"].ready() for n in range(3)]

        # --- the store comes back (same port, empty) ----------------------------------------------
        redis_server.start()
        up_at = time.monotonic()
        assert redis_server.port == port and redis_answers(port)
        assert store.get("sentinel") is None, "the restarted store starts empty (no persistence)"
        wait_for(lambda: store.exists(registration), timeout_s=10, message="registration written again")
        registered_after = time.monotonic() - up_at

        probes: list[str] = []

        def counted() -> bool:
            if time.monotonic() - up_at >= 0.25 * len(probes):
                probes.append(f"probe{len(probes)}")
                send(probes[-1], "sources", fails=1)
            return recorded("sources") > 0

        wait_for(counted, timeout_s=10, interval_s=0.02, message="a failure recorded in the store again")
        counted_after = time.monotonic() - up_at
        for probe in probes:
            assert results[probe].get(timeout=20) == 2
        before_last = recorded("sources")
        send("probe-last", "sources", fails=1)
        assert results["probe-last"].get(timeout=20) == 2
        wait_for(lambda: recorded("sources") == before_last + 1, timeout_s=5,
                 message="a later failure is recorded in the store")

        # --- nothing failed, nothing lost, nothing ran twice ---------------------------------------
        for key, result in results.items():
            fails = 2 if key.startswith("crash-during") else 1 if key.startswith(("crash", "probe")) else 0
            assert result.get(timeout=30) == fails + 1, key
        for key in results:
            assert ledger.get(f"runs:{key}") == "1", f"{key} ran {ledger.get(f'runs:{key}')} times"
        for n in range(3):
            stamps = [json.loads(s) for s in ledger.lrange(f"stamps:crash-during{n}", 0, -1)]
            assert [s["reruns"] for s in stamps] == [0, 1, 2], "re-run twice, counted per re-run"
            assert [s["retries"] for s in stamps] == [0, 0, 0], "Celery's own retry count untouched"
            gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(stamps)]
            assert all(gap >= BACKOFF_S - 0.02 for gap in gaps), f"backoff kept during the outage: {gaps}"
        wait_for(lambda: set(QUEUES) <= _consuming(app, w.hostname), timeout_s=10,
                 message="no queue left paused after the outage")
        log = w.log
        assert "store-unavailable" in log and "store-recovered" in log
        assert "Traceback" not in log
    print(f"\nstore outage {OUTAGE_S:.0f}s: {len(sent_during)} tasks sent during it, {len(ready_in_outage)} done "
          f"before it ended; crashes re-run during it: {crash_done_in_outage}; registration back "
          f"{registered_after:.2f}s and first failure recorded in Redis {counted_after:.2f}s after the store returned "
          f"({len(probes)} probe crashes)")
    assert not late, f"tasks sent during the outage (3 s before its end or earlier) not done while it lasted: {late}"
    assert all(crash_done_in_outage), "crashes during the outage were re-run and completed during it"
    assert registered_after <= RESUME_BOUND_S, f"registration back after {registered_after:.2f}s"
    assert counted_after <= RESUME_BOUND_S, f"failures recorded in Redis again after {counted_after:.2f}s"



def _run_hook(app: Celery, hook: Any, queue: str, *extra: Any) -> float | None:
    """Call an engine hook as the pool process running a delivery from ``queue`` would; the countdown of the
    Retry it raises (the message was deferred or re-run), or None when it let the task proceed."""
    task = app.tasks["faults.work"]
    task.push_request(id=str(uuid.uuid4()), delivery_info={"queue": queue, "routing_key": queue}, retries=0,
                      args=("k",), kwargs={}, called_directly=False, is_eager=False, hostname="w@faults")
    try:
        hook(task, *extra)
    except Retry as retry:
        return float(retry.when or 0)  # type: ignore[arg-type]
    finally:
        task.pop_request()
    return None


@pytest.mark.parametrize("store", [
    "up",
    "down",
])
def test_a_fallback_pause_ends_when_its_child_recovers(redis_url: str, namespace: str, store: str) -> None:
    """Two pool processes (two runtimes): A crashes on storage (rest_for_one pauses cache), B then runs storage
    successfully; A must no longer defer cache messages. With the store up this holds (control case)."""
    url = redis_url if store == "up" else f"redis://127.0.0.1:{free_port()}/0"
    conf = {"result_backend": "cache+memory://", "prismatic_backoff_initial_s": 0.1,
            "prismatic_backoff_max_s": 0.1, "prismatic_backoff_jitter_s": 0,
            "prismatic_child_min_executions": 1}  # this one failure is a child failure (a rest_for_one pause)
    (app_a, a), (app_b, b) = [(app, get_runtime(app)) for app in
                              (make_faults_app("memory://", namespace, url, redis_url, **conf) for _ in "ab")]
    assert a is not None and b is not None
    assert _run_hook(app_a, a.engine.on_crash, "storage", ConnectionError("down")) == pytest.approx(0.1)
    if store == "up":
        assert _run_hook(app_a, a.engine.before_run, "cache") is not None, "A pauses cache after the storage crash"
    else:  # a pause only in A's memory is not enforced per message: the workers' reconciliation stops the queue
        assert _run_hook(app_a, a.engine.before_run, "cache") is None
    assert _run_hook(app_b, b.engine.after_success, "storage") is None
    a.engine.pauses.invalidate()
    deferred = _run_hook(app_a, a.engine.before_run, "cache")
    assert deferred is None, f"A still defers cache for {deferred}s after storage recovered"
