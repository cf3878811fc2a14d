"""Bulkheads on real workers: a domain holds at most its cap of a shared worker's slots.

Given one worker with 4 slots serving a domain capped at 2 whose tasks all hang
and an uncapped domain, when both receive work, then the hanging domain never
holds more than 2 slots, the other domain's tasks keep completing on the same
worker, and the hanging domain's extra tasks are deferred, not dropped: each
runs exactly once after the hang ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.shed_app import make_app, queues
from tests.integration.conftest import shed_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

CONF: dict[str, Any] = {"prismatic_bulkhead_defer_s": 0.3, "prismatic_shed_enabled": False}


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_hanging_domain_holds_at_most_its_cap_and_the_other_domain_keeps_completing(
    pool: str, redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """slow (cap 2) hangs on all its tasks; fast's 20 tasks complete on the same 4-slot worker meanwhile."""
    app = make_app(redis_url, redis_url, namespace, **CONF)
    names = queues(namespace)
    runs = f"{namespace}:runs"
    with WorkerProcess("tests.apps.shed_app", hostname=f"bh-{pool}-{namespace}@test", pool=pool, concurrency=4,
                       env=shed_env(redis_url, namespace, CONF), cwd=ROOT) as worker:
        try:
            worker.wait_ready(app)
            for i in range(6):
                app.tasks["shed.hang"].apply_async((f"slow{i}", "slow"), queue=names["slow"])
            wait_for(lambda: client.get(f"{namespace}:running:slow") == "2", timeout_s=15,
                     message="two slow tasks hold their slots")
            wait_for(lambda: "bulkhead-deferred" in worker.log, timeout_s=10, message="extra slow tasks deferred")

            for i in range(20):
                app.tasks["shed.record"].apply_async((f"fast{i}",), queue=names["fast"])
            wait_for(lambda: client.hlen(runs) >= 20 and all(client.hget(runs, f"fast{i}") == "1" for i in range(20)),
                     timeout_s=20, message="every fast task completes while slow hangs")
            assert client.get(f"{namespace}:running:slow") == "2", "slow still holds exactly its cap"
            assert client.get(f"{namespace}:max:slow") == "2", "slow never held more than its cap"
            assert not any(client.hget(runs, f"slow{i}") for i in range(6)), "no slow task finished yet"
        finally:
            client.rpush(f"{namespace}:release", *["go"] * 6)
        wait_for(lambda: all(client.hget(runs, f"slow{i}") == "1" for i in range(6)), timeout_s=30,
                 message="every deferred slow task runs once the hang ends")
        assert client.get(f"{namespace}:max:slow") == "2"
        assert all(client.hget(runs, f"fast{i}") == "1" for i in range(20))


def test_a_cluster_wide_cap_holds_across_two_workers(redis_url: str, namespace: str, client: redis.Redis) -> None:
    """slow has cluster_concurrency 2 and no per-worker cap: two 2-slot workers still run at most 2 at once."""
    names = queues(namespace)
    conf = {**CONF, "prismatic_domains": {"slow": {"children": [names["slow"]], "cluster_concurrency": 2},
                                          "fast": {"children": [names["fast"]]}}}
    app = make_app(redis_url, redis_url, namespace, **conf)
    runs = f"{namespace}:runs"
    env = shed_env(redis_url, namespace, conf)
    with WorkerProcess("tests.apps.shed_app", hostname=f"c1-{namespace}@test", concurrency=2, env=env,
                       cwd=ROOT) as w1, \
            WorkerProcess("tests.apps.shed_app", hostname=f"c2-{namespace}@test", concurrency=2, env=env,
                          cwd=ROOT) as w2:
        try:
            w1.wait_ready(app)
            w2.wait_ready(app)
            for i in range(5):
                app.tasks["shed.hang"].apply_async((f"slow{i}", "slow"), queue=names["slow"])
            wait_for(lambda: client.get(f"{namespace}:running:slow") == "2", timeout_s=15,
                     message="two slow tasks hold the cluster's leases")
            wait_for(lambda: "bulkhead-deferred" in w1.log + w2.log, timeout_s=10, message="the rest deferred")
            assert client.zcard(Keys(namespace).key("leases", "slow")) == 2
            for i in range(10):
                app.tasks["shed.record"].apply_async((f"fast{i}",), queue=names["fast"])
            wait_for(lambda: all(client.hget(runs, f"fast{i}") == "1" for i in range(10)), timeout_s=15,
                     message="fast completes on the free slots")
            assert client.get(f"{namespace}:max:slow") == "2"
        finally:
            client.rpush(f"{namespace}:release", *["go"] * 5)
        wait_for(lambda: all(client.hget(runs, f"slow{i}") == "1" for i in range(5)), timeout_s=30,
                 message="every slow task runs once")
        assert client.get(f"{namespace}:max:slow") == "2"
        wait_for(lambda: client.zcard(Keys(namespace).key("leases", "slow")) == 0, timeout_s=5,
                 message="every lease released")
