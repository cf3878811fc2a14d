"""Load shedding on a real worker, default settings, on both brokers (issue 19's "done when").

Given 1,200 messages queued on each of two supervised queues, one shedding in ``park`` mode (the
default) and one in ``drop`` mode, 30 % marked low importance, 40 % high and 30 % unmarked (``send_task``,
whose priority kombu stamps 0; a producer without the plugin; ``apply_async`` without a priority), when
one worker drains them with the default threshold (1,000), resume mark (800) and sampler period (1 s):

* no unmarked or high message is shed, in either mode; low ones are, while the backlog is above the mark;
* the backlog falls through the resume mark at the worker's full rate, and at most ``BOUND`` messages are
  shed after it is below: the queue is FIFO, so message ``i`` of ``n`` was received with at most
  ``n - 1 - i`` messages behind it (the figure is printed);
* parked messages replay and run once, dropped ones never ran, every other message ran once, and
  ``supervision status --json`` shows the counts.

Redis: a prefork worker; low and high marked by header (one priority sub-queue keeps the order).
RabbitMQ: a solo worker; low and high marked by the AMQP priority the producer set (1 and 8; the
queue has no ``x-max-priority``, so it stays FIFO).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from kombu import Connection

from prismatic_celery.cli.main import supervision
from prismatic_celery.cli.shedding import shed
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.shed_app import make_app, queues
from tests.integration.conftest import shed_env

ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("PRISMATIC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
pytestmark = pytest.mark.integration

N = 1200
RESUME = 800  # the default resume mark: 80 % of the default threshold, 1,000
BOUND = 2  # messages shed once the backlog is below the mark, at most (measured: see the printed figure)
KINDS = ("low",) * 3 + ("unmarked",) * 3 + ("high",) * 4


@dataclass(frozen=True)
class Broker:
    name: str
    url: str
    pool: str
    marks: dict[str, dict[str, Any]]
    """The ``apply_async`` options that make a message low or high importance on this broker."""


def _amqp_reachable() -> None:
    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ unreachable at {AMQP_URL}: {exc} (CI is set: integration tests must run)")
        pytest.skip(f"RabbitMQ unreachable at {AMQP_URL}: {exc}")


def _delete_queues(url: str, names: list[str]) -> None:
    with Connection(url) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except conn.channel_errors:
                channel = conn.channel()
        channel.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_url: str, namespace: str) -> Iterator[Broker]:
    """The broker under test; RabbitMQ's queues of this test are deleted at the end."""
    if request.param == "redis":
        yield Broker("redis", redis_url, "prefork", {"low": {"headers": {"prismatic_importance": 0}},
                                                     "high": {"headers": {"prismatic_importance": 9}}})
        return
    _amqp_reachable()
    yield Broker("rabbitmq", AMQP_URL, "solo", {"low": {"priority": 1}, "high": {"priority": 8}})
    _delete_queues(AMQP_URL, list(queues(namespace).values()))


def _publish(app: Celery, plain: Celery, marks: dict[str, dict[str, Any]], queue: str, label: str) -> None:
    """``N`` ``shed.record`` messages keyed ``<label><i>``, of kind ``KINDS[i % 10]``."""
    task = app.tasks["shed.record"]
    with app.producer_or_acquire() as producer, plain.producer_or_acquire() as plain_producer:
        for i in range(N):
            key, kind = f"{label}{i}", KINDS[i % 10]
            if kind != "unmarked":
                task.apply_async((key,), queue=queue, producer=producer, **marks[kind])
            elif i % 3 == 0:
                app.send_task("shed.record", (key,), queue=queue, producer=producer)
            elif i % 3 == 1:
                plain.send_task("shed.record", (key,), queue=queue, producer=plain_producer)
            else:
                task.apply_async((key,), queue=queue, producer=producer)


def _index(key: str) -> int:
    return int(key[4:])  # labels are "park" and "drop"


def _check(label: str, shed: set[int]) -> int:
    """Only low messages were shed, some of them; how many after the backlog fell below the resume mark."""
    assert {KINDS[i % 10] for i in shed} == {"low"}, f"{label}: only low-importance messages are shed"
    below = sorted(i for i in shed if N - 1 - i < RESUME)
    assert len(below) <= BOUND, f"{label}: shed below the resume mark: {below}"
    return len(below)


def test_unmarked_and_high_messages_are_never_shed_and_shedding_stops_at_the_resume_mark(
    broker: Broker, redis_url: str, namespace: str, client: redis.Redis
) -> None:
    names = queues(namespace)
    conf = {"prismatic_shed_queues": {names["fast"]: {"mode": "drop"}}}
    app = make_app(broker.url, redis_url, namespace, **conf)
    plain = Celery("plain", broker=broker.url, set_as_current=False)  # a producer without the plugin
    _publish(app, plain, broker.marks, names["bulk"], "park")
    _publish(app, plain, broker.marks, names["fast"], "drop")
    runs, parked_key = f"{namespace}:runs", Keys(namespace).key("parked", names["bulk"])
    totals_key = Keys(namespace).key("shed-totals")
    env = {**shed_env(redis_url, namespace, conf), "SHED_BROKER_URL": broker.url}

    def settled() -> bool:
        ran = client.hkeys(runs)
        dropped = int(client.hget(totals_key, f"{names['fast']}:dropped") or 0)
        return (sum(k.startswith("park") for k in ran) + client.llen(parked_key) >= N
                and sum(k.startswith("drop") for k in ran) + dropped >= N)

    started = time.monotonic()
    with WorkerProcess("tests.apps.shed_app", hostname=f"{broker.name}-{namespace}@test", pool=broker.pool,
                       queues=[names["bulk"], names["fast"]], env=env, cwd=ROOT) as worker:
        try:
            wait_for(settled, timeout_s=90, interval_s=0.2, message="every message ran, was parked or dropped")
        except AssertionError:
            print(worker.log[-5000:])
            raise
        drained_s = time.monotonic() - started
        parked = {_index(json.loads(raw)["args"][0]) for raw in client.lrange(parked_key, 0, -1)}
        executed = client.hgetall(runs)
        dropped = {i for i in range(N) if f"drop{i}" not in executed}
        below = {"park": _check("park", parked), "drop": _check("drop", dropped)}
        assert all(executed.get(f"park{i}") == "1" for i in set(range(N)) - parked)
        assert all(executed.get(f"drop{i}") == "1" for i in set(range(N)) - dropped)
        assert int(client.hget(totals_key, f"{names['fast']}:dropped") or 0) == len(dropped)

        status = CliRunner().invoke(supervision, ["status", "--json"], obj=SimpleNamespace(app=app))
        children = {c["queue"]: c["shed"] for d in json.loads(status.output)["domains"] for c in d["children"]}
        assert children[names["bulk"]]["park"] == len(parked) and children[names["fast"]]["drop"] == len(dropped)

        wait_for(lambda: not client.exists(Keys(namespace).key("shed", names["bulk"])), timeout_s=10,
                 message="the queue stops shedding")
        replayed = CliRunner().invoke(shed, ["replay", names["bulk"], "--json"], obj=SimpleNamespace(app=app))
        assert replayed.exit_code == 0, replayed.output
        wait_for(lambda: all(client.hget(runs, f"park{i}") for i in parked), timeout_s=30,
                 message="replayed messages run")
    executed = client.hgetall(runs)
    assert all(executed[f"park{i}"] == "1" for i in range(N)), "every parked message ran once after replay"
    late = {label: sum(1 for i in range(N - 1 - 1000) if KINDS[i % 10] == "low" and i not in shed)
            for label, shed in (("park", parked), ("drop", dropped))}
    print(f"\n{broker.name}: {2 * N} drained in {drained_s:.1f}s (worker start included); shed {len(parked)} "
          f"parked / {len(dropped)} dropped of {N * 3 // 10} low per queue; shed below the resume mark: {below}; "
          f"low messages run while the backlog was above the threshold: {late}")
