"""Load shedding on real workers, Redis broker (issue 7's "done when").

Given 5,000 messages queued on one supervised queue, 30% of them low priority,
and the threshold at 1,000, when a worker drains the queue, then every
high-priority message completes, low-priority messages are parked (not lost)
while the queue sheds, and ``shed replay`` completes them: every message runs
exactly once. The sampler's Redis cost is measured at two task rates.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from prismatic_celery.cli.shedding import shed
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.shed_app import make_app, queues
from tests.integration.conftest import shed_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


SHED = {"prismatic_shed_interval_s": 0.25, "worker_prefetch_multiplier": 4}


def _publish(app: Any, messages: list[tuple[str, int]], queue: str) -> None:
    """Publish ``(key, priority)`` messages of ``shed.record`` (batched when kombu can: Redis, one pipeline)."""
    task = app.tasks["shed.record"]
    with app.producer_or_acquire() as producer:
        batch = producer.batch() if hasattr(producer, "batch") else contextlib.nullcontext()
        with batch:
            for key, priority in messages:
                task.apply_async((key,), queue=queue, priority=priority, producer=producer)


@pytest.mark.timeout(300)  # about 40 s on the project's machine; a busy one may take three times as long
def test_5000_messages_high_priority_complete_low_priority_parked_then_replayed_exactly_once(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Redis transport: priority 0 is high (importance 9), priority 9 low (importance 0); threshold 1,000."""
    app = make_app(redis_url, redis_url, namespace, **SHED)
    queue = queues(namespace)["bulk"]
    runs = f"{namespace}:runs"
    rng = random.Random(7)
    low = set(rng.sample(range(5000), 1500))
    _publish(app, [(f"m{i}", 9 if i in low else 0) for i in range(5000)], queue)
    assert sum(client.llen(k) for k in client.keys(f"{queue}*") if client.type(k) == "list") == 5000

    started = time.monotonic()
    with WorkerProcess("tests.apps.shed_app", hostname=f"shed-{namespace}@test", pool="prefork", concurrency=4,
                       env=shed_env(redis_url, namespace, SHED), cwd=ROOT) as worker:
        parked_key = Keys(namespace).key("parked", queue)
        try:
            wait_for(lambda: client.hlen(runs) + client.llen(parked_key) >= 5000, timeout_s=150, interval_s=0.2,
                     message="every message either ran or was parked")
        except AssertionError:
            print(client.hlen(runs), client.llen(parked_key), worker.log[-3000:])
            raise
        drained_s = time.monotonic() - started
        executed = client.hgetall(runs)
        parked = [json.loads(raw) for raw in client.lrange(parked_key, 0, -1)]
        parked_ids = {int(p["args"][0][1:]) for p in parked}

        high = set(range(5000)) - low
        assert all(executed.get(f"m{i}") == "1" for i in high), "every high-priority message completed once"
        assert parked_ids <= low, "only low-priority messages were parked"
        assert len(parked) == len(parked_ids) > 0
        assert not parked_ids & {int(k[1:]) for k in executed}, "a parked message did not also run"
        assert all(p["backlog"] >= 800 and p["threshold"] == 1000 and p["queue"] == queue for p in parked)
        assert all(p["priority"] == 9 and p["importance"] == 0 and p["task"] == "shed.record" for p in parked)
        assert "event=shedding-started" in worker.log and "event=shedding-stopped" in worker.log
        line = next(x for x in worker.log.splitlines() if "event=supervision-shed" in x)
        assert "WARNING" in line
        for field in ("task=shed.record", "task_id=", f"queue={queue}", "backlog=", "threshold=1000"):
            assert field in line

        wait_for(lambda: not client.exists(Keys(namespace).key("shed", queue)), timeout_s=10,
                 message="the queue stops shedding")
        result = CliRunner().invoke(shed, ["replay", queue, "--json"], obj=SimpleNamespace(app=app))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["replayed"] == len(parked)
        assert client.llen(parked_key) == 0
        wait_for(lambda: client.hlen(runs) >= 5000, timeout_s=30, interval_s=0.2, message="replayed messages run")
        total_s = time.monotonic() - started
    counts = Counter(client.hgetall(runs).values())
    assert counts == {"1": 5000}, "each of the 5,000 messages ran exactly once"
    totals = client.hgetall(Keys(namespace).key("shed-totals"))
    assert totals[f"{queue}:parked"] == str(len(parked)) and totals[f"{queue}:replayed"] == str(len(parked))
    print(f"\n5000 messages: parked {len(parked)} of 1500 low, drained in {drained_s:.1f}s, "
          f"replayed and done in {total_s:.1f}s")


class _Monitor:
    """Counts, with Redis MONITOR, the commands one database receives, by kind (Lua-internal calls excluded)."""

    def __init__(self, url: str, namespace: str, queues: list[str]) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.db = int(url.rsplit("/", 1)[1])
        self.namespace = namespace
        self.queues = tuple(queues)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _kind(self, command: str) -> str | None:
        name, _, rest = command.partition(" ")
        name = name.upper()
        if name == "LLEN" and rest.startswith(self.queues):
            return "sampler-broker"
        if name == "EVALSHA" and Keys(self.namespace).key("backlog") in rest:
            return "sampler-store"
        if name == "MGET" and Keys(self.namespace).key("shed", "") in rest:
            return "guard-view"
        return None

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            for entry in monitor.listen():
                if self.stop.is_set():
                    return
                if entry.get("db") != self.db or entry.get("client_type") == "lua":
                    continue
                kind = self._kind(str(entry.get("command", "")))
                if kind:
                    with self.lock:
                        self.counts[kind] += 1

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)

    def close(self) -> None:
        self.stop.set()
        self.client.ping()  # a last command wakes the monitor loop up


def _window(monitor: _Monitor, client: redis.Redis, runs: str, seconds: float) -> dict[str, float]:
    before, done_before, start = monitor.snapshot(), client.hlen(runs), time.monotonic()
    time.sleep(seconds)  # the measurement window itself: rates are counts over wall time
    after, done_after, elapsed = monitor.snapshot(), client.hlen(runs), time.monotonic() - start
    rates = {k: (after[k] - before[k]) / elapsed for k in ("sampler-broker", "sampler-store", "guard-view")}
    rates["tasks"] = (done_after - done_before) / elapsed
    return rates


COST = {"prismatic_shed_interval_s": 0.2, "prismatic_shed_threshold": 100000}


def test_the_samplers_redis_commands_per_second_do_not_grow_with_the_task_rate(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Measured with MONITOR at ~10 tasks/s and at the worker's full rate: the sampler's command rate is flat."""
    app = make_app(redis_url, redis_url, namespace, **COST)
    names = queues(namespace)
    runs = f"{namespace}:runs"
    monitor = _Monitor(redis_url, namespace, list(names.values()))
    monitor.thread.start()
    stop = threading.Event()
    with WorkerProcess("tests.apps.shed_app", hostname=f"cost-{namespace}@test", pool="prefork", concurrency=2,
                       env=shed_env(redis_url, namespace, COST), cwd=ROOT) as worker:
        try:
            worker.wait_ready(app)

            def trickle() -> None:
                i = 0
                while not stop.is_set():
                    app.tasks["shed.record"].apply_async((f"slow{i}",), queue=names["bulk"])
                    i += 1
                    stop.wait(0.1)

            feeder = threading.Thread(target=trickle, daemon=True)
            feeder.start()
            wait_for(lambda: client.hlen(runs) >= 5, timeout_s=10, message="the trickle runs")
            low = _window(monitor, client, runs, 3.0)
            stop.set()
            feeder.join(5)

            _publish(app, [(f"fast{i}", 0) for i in range(1200)], names["bulk"])
            wait_for(lambda: client.hlen(runs) >= 100 + low["tasks"] * 3, timeout_s=10, message="the flood runs")
            high = _window(monitor, client, runs, 3.0)
        finally:
            stop.set()
            monitor.close()
            client.delete(*names.values())  # what is left of the flood need not run: shutdown is quicker
    print(f"\nsampler cost at {low['tasks']:.0f} tasks/s: {low['sampler-broker']:.1f} LLEN/s + "
          f"{low['sampler-store']:.1f} EVALSHA/s (guard view MGET {low['guard-view']:.1f}/s); "
          f"at {high['tasks']:.0f} tasks/s: {high['sampler-broker']:.1f} LLEN/s + {high['sampler-store']:.1f} "
          f"EVALSHA/s (guard view MGET {high['guard-view']:.1f}/s)")
    assert high["tasks"] > 5 * low["tasks"], "the two windows really ran at different task rates"
    per_sample = 4 * len(names)  # four priority sub-queues per sampled queue
    for rates in (low, high):
        # far below the threshold the sample is published only every QUIET_PUBLISH_S (5 s): at most one
        # script call per period in any case, whatever the rate
        assert 0 <= rates["sampler-store"] <= 1 / 0.2 * 1.2, "at most one script call per period"
        assert rates["sampler-broker"] == pytest.approx(per_sample / 0.2, rel=0.35), "one probe per period"
        assert rates["guard-view"] <= 2 / 0.2 * 1.2, "each pool process reads the state at most once per period"
    assert high["sampler-broker"] + high["sampler-store"] <= 1.3 * (low["sampler-broker"] + low["sampler-store"])
