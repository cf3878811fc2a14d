"""Load: 100,000 queued messages with shedding on.

Given a private broker holding 100,000 low-importance messages on one supervised queue, when a
prefork worker (2 processes) with shedding on consumes it while 200 high-importance messages
arrive, then:

* every high-importance message completes exactly once;
* the worker's memory stays bounded: main process plus pool processes below ``WORKER_RSS_MAX``
  (320 MiB) at every sample, and the last third of the run adds less than ``WORKER_GROWTH_MAX``
  (32 MiB) to the peak of the middle third. The backlog stays in the broker; the worker holds only
  its prefetch, and a shed message never reaches a pool process (measured: 176-178 MiB, flat);
* the Redis memory the plugin uses (every key of its namespace, ``MEMORY USAGE``) stays below
  ``PLUGIN_REDIS_MAX`` at every sample, because the park list is capped at
  ``prismatic_shed_park_max`` and every other key is bounded by its own setting;
* nothing is lost: every low-importance message is still in the broker, ran, or was parked
  (the oldest parked ones beyond the cap are counted as ``overflowed``, as documented).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from celery import Celery

from prismatic_celery.admission.shedding.park import parked_key, totals_key
from prismatic_celery.admission.shedding.sampler import redis_subqueues
from prismatic_celery.observability.sampler import rss_bytes
from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.conftest import RedisServer
from tests.faults.apps import make_faults_app
from tests.faults.conftest import faults_env, worker

pytestmark = pytest.mark.integration

QUEUED, HIGH, PARK_MAX = 100_000, 200, 2_000
MIB = 1024 * 1024
WORKER_RSS_MAX = 320 * MIB  # main process + 2 pool processes (measured 176-178 MiB)
WORKER_GROWTH_MAX = 32 * MIB
# PARK_MAX parked records (~450 bytes) + the event stream (1000 entries, ~300 bytes) + counters, with room
PLUGIN_REDIS_MAX = 4 * MIB
LOW_PRIORITY, HIGH_PRIORITY = 9, 0  # kombu's Redis transport consumes 0 first: importance 0 and 9
CONF = {"prismatic_shed_threshold": 1000, "prismatic_shed_interval_s": 0.5, "prismatic_shed_park_max": PARK_MAX}


def _rss(worker: WorkerProcess) -> int:
    """Resident memory of the worker's main process and its pool processes, in bytes (0 once it is gone)."""
    pids = [worker.proc.pid, *worker.pool_pids()] if worker.proc is not None else []
    return sum(rss_bytes(pid) or 0 for pid in pids)


def _plugin_memory(client: redis.Redis, namespace: str) -> int:
    """Bytes of every key in the plugin's namespace (``MEMORY USAGE``, all samples)."""
    return sum(int(client.memory_usage(key, samples=0) or 0)
               for key in client.scan_iter(match=Keys(namespace).pattern(), count=1000))


def _subqueues(queue: str) -> list[str]:
    """The Redis lists kombu's Redis transport keeps for ``queue`` (its default separator and priority steps)."""
    return redis_subqueues(queue, sep="\x06\x16", steps=[0, 3, 6, 9])


def _backlog(client: redis.Redis, queue: str) -> int:
    return sum(int(client.llen(name)) for name in _subqueues(queue))


def _preload(app_publish: redis.Redis, app: Celery, queue: str, count: int) -> None:
    """Queue ``count`` low-importance ``faults.accept("lo")`` messages, fast: one message published by
    Celery is the template, copied with fresh ids and delivery tags (pipelined LPUSH)."""
    task = app.tasks["faults.accept"]
    result = task.apply_async(("lo",), queue=queue, priority=LOW_PRIORITY)
    key = next(n for n in _subqueues(queue) if app_publish.llen(n))
    template = app_publish.lpop(key)
    assert isinstance(template, bytes)
    tag = json.loads(template)["properties"]["delivery_tag"]
    text = template.decode()
    pipe = app_publish.pipeline(transaction=False)
    for i in range(count):
        pipe.lpush(key, text.replace(result.id, str(uuid.uuid4())).replace(tag, str(uuid.uuid4())))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    assert _backlog(app_publish, queue) == count


@pytest.mark.timeout(400)  # about 30 s on the project's machine; a busy one may take several times as long
def test_a_hundred_thousand_queued_messages_with_shedding_on(redis_server: RedisServer, redis_url: str,
                                                              namespace: str, ledger: redis.Redis) -> None:
    broker = redis_server.url
    store_url = broker.rsplit("/", 1)[0] + "/1"
    app = make_faults_app(broker, namespace, store_url, redis_url, **CONF)
    runtime = get_runtime(app)
    assert runtime is not None
    totals_name, parked_name = totals_key(runtime.keys), parked_key(runtime.keys, "monitor")
    brokers = redis.Redis.from_url(broker)
    store = redis.Redis.from_url(store_url)
    began = time.monotonic()
    _preload(brokers, app, "monitor", QUEUED)
    preloaded_s = time.monotonic() - began
    env = faults_env(broker, namespace, redis_url, store=store_url, conf=CONF)
    rss: list[int] = []
    plugin_bytes: list[int] = []
    with worker(namespace, env, name="load") as w:
        w.wait_ready(app)

        def sample() -> None:
            rss.append(_rss(w))
            plugin_bytes.append(_plugin_memory(store, namespace))

        high = []
        for i in range(HIGH):
            high.append(app.tasks["faults.accept"].apply_async((f"hi{i}",), queue="monitor", priority=HIGH_PRIORITY))
            if i % 20 == 19:
                sample()
                time.sleep(0.25)

        def settled() -> bool:
            sample()
            done = all(ledger.get(f"runs:hi{i}") == "1" for i in range(HIGH))
            return done and int(store.hget(totals_name, "monitor:parked") or 0) >= 2 * PARK_MAX

        wait_for(settled, timeout_s=300, interval_s=0.5,
                 message="every high-importance message done and twice the park list's cap parked")
        code = w.stop(timeout_s=30)
        assert code == 0, w.log[-20000:]
    totals = {k.decode(): int(v) for k, v in store.hgetall(totals_name).items()}
    parked_len = int(store.llen(parked_name))
    ran_low = int(ledger.get("runs:lo") or 0)
    left = _backlog(brokers, "monitor")
    unacked = int(brokers.hlen("unacked"))
    # every high-importance message exactly once
    assert [int(ledger.get(f"runs:hi{i}") or 0) for i in range(HIGH)] == [1] * HIGH
    assert all(r.state == "SUCCESS" for r in high)
    # nothing lost: in the broker, ran, or parked (the cap's overflow is counted, never silent)
    assert unacked == 0
    assert left + ran_low + totals["monitor:parked"] == QUEUED, (left, ran_low, totals)
    assert parked_len == PARK_MAX
    assert totals["monitor:overflowed"] == totals["monitor:parked"] - PARK_MAX
    # bounded memory
    running = [r for r in rss if r]
    third = len(running) // 3
    assert max(running) < WORKER_RSS_MAX, running
    assert max(running[2 * third:]) - max(running[third:2 * third]) < WORKER_GROWTH_MAX, running
    assert max(plugin_bytes) < PLUGIN_REDIS_MAX, plugin_bytes
    print(f"\n{QUEUED} queued (preloaded in {preloaded_s:.1f}s): {HIGH} high-importance done; "
          f"{ran_low} low ran, {totals['monitor:parked']} parked ({totals['monitor:overflowed']} overflowed the "
          f"cap of {PARK_MAX}), {left} left in the broker; worker RSS {min(running) / MIB:.0f}-"
          f"{max(running) / MIB:.0f} MiB; plugin Redis memory max {max(plugin_bytes) / MIB:.2f} MiB; "
          f"{time.monotonic() - began:.1f}s")
