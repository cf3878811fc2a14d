"""Real workers (prefork, solo, threads) against a real Redis: wiring, signals, degradation.

Given a supervised app and a real worker, when tasks run, then the plugin
observes them from the right process, registers the worker, and never makes
a task fail, even with its store unreachable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.conftest import free_port
from tests.integration.conftest import basic_env

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ("celery", "storage", "cache", "sources")


# Observation tests: a crash is final here (no re-run), so every outcome is counted once.
OBSERVE = {"prismatic_max_restarts_per_message": 0}


def _env(broker: str, namespace: str, store: str | None = None, conf: dict[str, Any] | None = None) -> dict[str, str]:
    return basic_env(broker, namespace, OBSERVE if conf is None else conf, store)


@pytest.fixture
def app(redis_url: str, namespace: str) -> Iterator[Celery]:
    application = make_app(redis_url, namespace, **OBSERVE)
    yield application
    application.close()


def _stats(redis_url: str, namespace: str, hostname: str) -> dict[str, int]:
    raw = redis.Redis.from_url(redis_url, decode_responses=True).hgetall(Keys(namespace).key("stats", hostname))
    return {k: int(v) for k, v in raw.items()}


@pytest.mark.integration
@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_signals_count_every_outcome_once_in_every_pool(app: Celery, redis_url: str, namespace: str,
                                                        pool: str) -> None:
    """Successes and failures are counted per child queue exactly once, whichever process fires the signal."""
    hostname = f"{pool}-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=hostname, pool=pool, concurrency=2,
                       env=_env(redis_url, namespace), cwd=ROOT) as worker:
        worker.wait_ready(app)
        ok = [app.tasks["basic.store_item"].delay(f"i{i}") for i in range(6)]
        bad = [app.tasks["basic.fetch_fail"].delay(f"bad {i}") for i in range(3)]
        assert [r.get(timeout=20) for r in ok] == [f"stored i{i}" for i in range(6)]
        for result in bad:
            with pytest.raises(ValueError):
                result.get(timeout=20, propagate=True)
        expected = {"storage:started": 6, "storage:succeeded": 6, "sources:started": 3, "sources:failed": 3}
        wait_for(lambda: _stats(redis_url, namespace, hostname) == expected, timeout_s=10,
                 message=f"stats {expected}")
        key = Keys(namespace).key("worker", hostname)
        registration = redis.Redis.from_url(redis_url, decode_responses=True).get(key)
        assert registration is not None and f'"hostname":"{hostname}"' in registration
        # prefork: each pool process names the message it runs in memory the worker reads when it dies
        assert f'"pool_watched":{"true" if pool == "prefork" else "false"}' in registration
        slot = app.tasks["basic.slot"].apply_async(queue="storage")
        assert slot.get(timeout=20) == (slot.id if pool == "prefork" else None)
        assert worker.stop() == 0
    assert redis.Redis.from_url(redis_url).exists(key) == 0, "worker_shutdown removes the registration"


@pytest.mark.integration
def test_a_killed_pool_process_is_counted_from_the_main_process(app: Celery, redis_url: str, namespace: str) -> None:
    """WorkerLostError fires task_failure in the prefork main process; it is still counted once.

    (On an unsupervised queue: on a supervised one the plugin runs the message again instead,
    see tests/integration/test_remediation.py.)"""
    hostname = f"lost-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=hostname, pool="prefork", concurrency=1,
                       env=_env(redis_url, namespace), cwd=ROOT) as worker:
        worker.wait_ready(app)
        lost = app.tasks["basic.die"].apply_async(queue="celery")
        with pytest.raises(Exception, match=r"Worker exited prematurely|WorkerLostError"):
            lost.get(timeout=30, propagate=True)
        assert app.tasks["basic.add"].apply_async((2, 3), queue="celery").get(timeout=20) == 5
        stats = wait_for(
            lambda: (s := _stats(redis_url, namespace, hostname)).get("-:failed") == 1
            and s.get("-:succeeded") == 1 and s,
            timeout_s=10, message="-:failed == 1 and -:succeeded == 1",
        )
        # The killed child's own counters since its last flush die with it (at most one flush period).
        assert stats["-:started"] in (1, 2)


@pytest.mark.integration
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_tasks_succeed_with_the_store_on_a_closed_port(app: Celery, redis_url: str, namespace: str,
                                                       pool: str) -> None:
    """With the supervision store unreachable, every task still succeeds and the worker logs the fallback."""
    dead_store = f"redis://127.0.0.1:{free_port()}/0"
    hostname = f"nostore-{pool}-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=hostname, pool=pool, concurrency=2,
                       env=_env(redis_url, namespace, store=dead_store), cwd=ROOT) as worker:
        worker.wait_ready(app)
        results = [app.tasks["basic.store_item"].delay(f"x{i}") for i in range(10)]
        results += [app.tasks["basic.add"].apply_async((i, i), queue="cache") for i in range(10)]
        values = [r.get(timeout=30) for r in results]
        assert values == [f"stored x{i}" for i in range(10)] + [2 * i for i in range(10)]
        wait_for(lambda: "store-unavailable" in worker.log, timeout_s=10, message="fallback warning")
        assert "Traceback" not in worker.log


@pytest.mark.integration
def test_a_bad_setting_stops_the_worker_at_start_naming_it(redis_url: str, namespace: str) -> None:
    """A typo in a prismatic_* key stops `celery worker` before it consumes anything, naming the key."""
    worker = WorkerProcess("tests.apps.basic", hostname=f"bad-{namespace}@test", pool="solo",
                           env=_env(redis_url, namespace, conf={"prismatic_hotspot_restart": 3}), cwd=ROOT)
    worker.start()
    assert worker.proc is not None
    code = worker.proc.wait(60)
    assert code != 0
    assert "prismatic_hotspot_restart" in worker.log and "did you mean 'prismatic_hotspot_restarts'" in worker.log
    lines = worker.log.strip().splitlines()
    assert len(lines) <= 15, f"{len(lines)} lines:\n{worker.log}"
    assert "Traceback" not in worker.log and sum("prismatic_hotspot_restart" in line for line in lines) == 1
    assert "prismatic_lessons_max" not in worker.log, "the close matches only, not every setting"


@pytest.mark.integration
def test_domain_option_consumes_only_that_domains_queues(app: Celery, redis_url: str, namespace: str) -> None:
    """`celery worker --domain osint` consumes the osint queues and leaves core's messages in the broker."""
    hostname = f"dom-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=hostname, pool="solo", extra_args=["--domain", "osint"],
                       env=_env(redis_url, namespace), cwd=ROOT) as worker:
        worker.wait_ready(app)
        replies = app.control.inspect(destination=[hostname], timeout=2).active_queues() or {}
        assert sorted(q["name"] for q in replies[hostname]) == ["monitor", "sources"]
        core = app.tasks["basic.store_item"].delay("waits")
        failing = app.tasks["basic.fetch_fail"].delay("runs")
        with pytest.raises(ValueError):
            failing.get(timeout=20)
        assert core.state == "PENDING"
        client = redis.Redis.from_url(redis_url)
        assert client.llen("storage") == 1, "the core message stays safely in the broker"


@pytest.mark.integration
def test_an_unknown_domain_stops_the_worker_with_one_line(redis_url: str, namespace: str) -> None:
    """`celery worker --domain nope`: exit 1 and one line naming the known domains, no traceback."""
    worker = WorkerProcess("tests.apps.basic", hostname=f"nodom-{namespace}@test", pool="solo",
                           extra_args=["--domain", "nope"], env=_env(redis_url, namespace), cwd=ROOT)
    worker.start()
    assert worker.proc is not None
    assert worker.proc.wait(60) == 1, worker.log
    assert "Error: --domain: no domain 'nope'; known: core, osint, evo" in worker.log
    assert "Traceback" not in worker.log


def test_worker_process_fixture_reports_missing_app(tmp_path: Path) -> None:
    """The harness fails with the worker's own log when the worker cannot start."""
    worker = WorkerProcess("no_such_module_xyz", hostname="x@test", pool="solo", cwd=tmp_path,
                           env={"PYTHONPATH": str(tmp_path)})
    worker.start()
    app = Celery("probe", broker="memory://", set_as_current=False)
    with pytest.raises(AssertionError, match="exited with"):
        worker.wait_ready(app, timeout_s=30)
    assert os.path.exists(worker._log.name)
