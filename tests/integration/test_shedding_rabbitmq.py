"""Load shedding with RabbitMQ as the broker (Redis stays the store).

Given 400 messages on a RabbitMQ queue (FIFO: no x-max-priority), 30% of them
low priority (AMQP priority 1, importance 1) and a threshold of 100, when a
worker drains the queue, then the backlog is read with a passive
queue_declare, low-priority messages are parked while the queue sheds, and
replay completes them: every message runs exactly once.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from kombu import Connection

from prismatic_celery.keys import Keys
from prismatic_celery.shedding_cli import shed
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.shed_app import make_app, queues

ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("PRISMATIC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def amqp_url() -> str:
    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ unreachable at {AMQP_URL}: {exc} (CI is set: integration tests must run)")
        pytest.skip(f"RabbitMQ unreachable at {AMQP_URL}: {exc}")
    return AMQP_URL


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def rabbit_queues(amqp_url: str, namespace: str) -> Iterator[dict[str, str]]:
    """This test's queue names; deleted from RabbitMQ at the end."""
    names = queues(namespace)
    yield names
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        for name in names.values():
            try:
                channel.queue_delete(name)
            except conn.channel_errors:
                channel = conn.channel()
        channel.close()


CONF: dict[str, Any] = {"prismatic_shed_threshold": 100, "prismatic_shed_resume_below": 50,
                        "prismatic_shed_interval_s": 0.2, "worker_prefetch_multiplier": 1}


def test_rabbitmq_backlog_is_sampled_low_priority_parked_and_replayed_exactly_once(
    amqp_url: str, redis_url: str, namespace: str, client: redis.Redis, rabbit_queues: dict[str, str]
) -> None:
    """AMQP: higher numbers are higher priority, so priority 1 is importance 1 (< cut-off 5) and 8 is kept."""
    app = make_app(amqp_url, redis_url, namespace, **CONF)
    queue = rabbit_queues["bulk"]
    runs = f"{namespace}:runs"
    low = set(random.Random(3).sample(range(400), 120))
    with app.producer_or_acquire() as producer:
        for i in range(400):
            app.tasks["shed.record"].apply_async((f"r{i}",), queue=queue, priority=1 if i in low else 8,
                                                 producer=producer)
    env = {"SHED_BROKER_URL": amqp_url, "SHED_STORE_URL": redis_url, "SHED_NAMESPACE": namespace,
           "PYTHONPATH": str(ROOT), "SHED_CONF": json.dumps(CONF)}
    parked_key = Keys(namespace).key("parked", queue)
    with WorkerProcess("tests.apps.shed_app", hostname=f"amqp-{namespace}@test", pool="prefork", concurrency=2,
                       queues=list(rabbit_queues.values()), env=env, cwd=ROOT) as worker:
        wait_for(lambda: client.hlen(runs) + client.llen(parked_key) >= 400, timeout_s=40, interval_s=0.2,
                 message="every message either ran or was parked")
        parked = [json.loads(raw) for raw in client.lrange(parked_key, 0, -1)]
        parked_ids = {int(p["args"][0][1:]) for p in parked}
        executed = client.hgetall(runs)
        assert all(executed.get(f"r{i}") == "1" for i in set(range(400)) - low), "every high-priority message ran"
        assert parked and parked_ids <= low and len(parked_ids) == len(parked)
        assert all(p["priority"] == 1 and p["importance"] == 1 and p["backlog"] >= 50 for p in parked)
        assert "event=shedding-started" in worker.log
        assert int(client.hget(Keys(namespace).key("backlog"), queue) or -1) >= 0, "sampled via queue_declare"

        wait_for(lambda: not client.exists(Keys(namespace).key("shed", queue)), timeout_s=10,
                 message="the queue stops shedding")
        result = CliRunner().invoke(shed, ["replay", queue, "--json"], obj=SimpleNamespace(app=app))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["replayed"] == len(parked)
        wait_for(lambda: client.hlen(runs) >= 400, timeout_s=20, message="replayed messages run")
    assert Counter(client.hgetall(runs).values()) == {"1": 400}, "each message ran exactly once"
    print(f"\nRabbitMQ: parked {len(parked)} of 120 low, all 400 ran once after replay")
