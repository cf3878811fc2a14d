"""Supervision never becomes the outage: a child fails by rate, a message fails alone.

Two real workers (prefork and solo, or two prefork for load) on a real Redis, with the plugin's
DEFAULT settings (the test app's faster timers are set back to their defaults here), for each
behaviour of the two levels of failure:

* a busy child with a steady 2 % error rate never trips; a child whose every message fails does;
* strategies act on child failures, and a message deferred by a pause runs soon after it ends;
* a cool-down is never removed by a rest_for_one resume;
* dead letters are not escalations: one per failure pattern, no CRITICAL line;
* Celery's own retries (``autoretry_for``) keep exactly Celery's behaviour and counts;
* a temporary child's message whose pool process dies fails with Celery's WorkerLostError.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.supervision.pauses import Pause, read_pauses, rest_cause, set_pause
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import DOMAINS, make_app
from tests.conftest import failure_events
from tests.integration.conftest import basic_env, plugin_lines

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

#: tests/apps/basic.py speeds up two timers for other tests; these tests run with every default.
DEFAULTS: dict[str, Any] = {"prismatic_reconcile_interval_s": 1.0, "prismatic_stats_flush_s": 5.0}


@contextmanager
def two_workers(redis_url: str, namespace: str, conf: dict[str, Any], *, pools: tuple[str, str] = ("prefork", "solo"),
                ) -> Iterator[tuple[Celery, list[WorkerProcess]]]:
    """Two real workers of tests/apps/basic.py with ``conf``, started and answering."""
    app = make_app(redis_url, namespace, **conf)
    env = basic_env(redis_url, namespace, conf)
    workers = [WorkerProcess("tests.apps.basic", hostname=f"{name}-{namespace}@two", pool=pool, concurrency=2,
                             env=env, cwd=ROOT) for name, pool in zip(("a", "b"), pools, strict=True)]
    with ExitStack() as stack:
        for worker in workers:
            stack.enter_context(worker)
        for worker in workers:
            worker.wait_ready(app)
        yield app, workers


def consuming(app: Celery, workers: list[WorkerProcess]) -> dict[str, set[str]]:
    hosts = [w.hostname for w in workers]
    replies = app.control.inspect(destination=hosts, timeout=1).active_queues() or {}
    return {h: {q["name"] for q in queues} for h, queues in replies.items()}


def stream(client: redis.Redis, namespace: str, kind: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(Keys(namespace).key("events")) if fields.get("type") == kind]


@pytest.mark.timeout(300)  # a minute of load, then the drain: a busy machine drains slower
def test_a_steady_two_percent_error_rate_for_a_minute_pauses_nothing(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Given a busy storage queue (about 250 messages/s for 60 s on two prefork workers) where every 50th message
    fails once, when the failures are re-run, then the child never fails: no restart, no pause, nothing lost."""
    rate, seconds = 250, 60
    with two_workers(redis_url, namespace, DEFAULTS, pools=("prefork", "prefork")) as (app, workers):
        flaky = app.tasks["basic.flaky"]
        sent = 0
        started = time.monotonic()
        with app.producer_or_acquire() as producer:
            while time.monotonic() - started < seconds:
                due = int((time.monotonic() - started) * rate)
                while sent < due:
                    flaky.apply_async((f"m{sent}", 1 if sent % 50 == 0 else 0), queue="storage", producer=producer,
                                      ignore_result=True)
                    sent += 1
                time.sleep(0.01)
        wait_for(lambda: sum(int(v or 0) for v in client.mget([f"runs:m{i}" for i in range(sent)])) == sent,
                 timeout_s=180, interval_s=0.5, message=f"{sent} messages completed")
        assert sent >= rate * seconds * 0.95
        assert all(v == "1" for v in client.mget([f"runs:m{i}" for i in range(sent)])), "each ran exactly once"
        assert sum(int(v or 0) for v in client.mget([f"attempts:m{i}" for i in range(0, sent, 50)])) == \
            2 * len(range(0, sent, 50)), "every failing message failed once and succeeded on its re-run"
        assert len(failure_events(client, namespace, "storage")) == len(range(0, sent, 50))
        assert stream(client, namespace, "restart") == [] and stream(client, namespace, "pause") == []
        assert client.hgetall(Keys(namespace).key("restart-totals")) == {}
        assert all({"storage", "cache", "telemetry"} <= q for q in consuming(app, workers).values())
        assert not any("queue-paused" in w.log for w in workers)
        # A slow machine may fall behind 250 messages/s: the backlog then passes the default shedding threshold
        # (1000) and shedding logs its own WARNINGs, a true overload, not crash handling; only those are set apart.
        logged = [line for w in workers for line in plugin_lines(w.log)]
        shedding = [line for line in logged if "event=shedding-" in line]
        assert all(int(re.search(r" backlog=(\d+)", line)[1]) >= int(re.search(r" threshold=(\d+)", line)[1])
                   for line in shedding if "event=shedding-started" in line), shedding
        crash_lines = [line for line in logged if "event=shedding-" not in line]
        crashes = len(range(0, sent, 50))
        assert len(crash_lines) <= 1.1 * crashes, f"{len(crash_lines)} plugin lines for {crashes} crashes"
        assert not [line for line in crash_lines if "WARNING/" in line or "CRITICAL/" in line], "re-runs are INFO"


def test_a_child_whose_every_message_fails_trips_within_five_seconds_and_pauses_its_later_siblings(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Given storage that just ran 100 messages fine, when every new message fails (a bad deploy), then within 5 s
    the child fails, cache and telemetry stop being consumed on both workers, and other domains keep running."""
    with two_workers(redis_url, namespace, DEFAULTS) as (app, workers):
        ok = [app.tasks["basic.record"].apply_async((f"ok{i}",), queue="storage") for i in range(100)]
        assert [r.get(timeout=30) for r in ok] == [f"ok{i}" for i in range(100)]
        started = time.time()
        for i in range(300):
            app.tasks["basic.flaky"].apply_async((f"bad{i}", 1000), queue="storage", ignore_result=True)
        wait_for(lambda: stream(client, namespace, "restart"), timeout_s=10, message="the child fails")
        tripped = float(stream(client, namespace, "restart")[0]["time"]) - started
        wait_for(lambda: all(not ({"cache", "telemetry"} & q) for q in consuming(app, workers).values()),
                 timeout_s=10, message="cache and telemetry paused on both workers")
        paused = time.time() - started
        assert tripped <= 5.0 and paused <= 5.0 + 1.0, (tripped, paused)
        restart = stream(client, namespace, "restart")[0]
        assert restart["child"] == "storage" and int(restart["failures"]) * 2 >= int(restart["executions"]) >= 20
        assert app.tasks["basic.record"].apply_async(("other",), queue="monitor").get(timeout=10) == "other"
        print(f"\nthe child failed {tripped:.2f} s after the first bad message ({restart['failures']} failures among "
              f"{restart['executions']} executions); siblings paused on both workers after {paused:.2f} s")


def test_a_deferred_message_runs_within_one_and_a_half_seconds_of_its_pause_ending(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Given a cache message a worker holds (countdown), when storage fails by rate (cache paused for up to 30 s) and
    recovers about 3 s later, then the held message, deferred meanwhile, runs within 1.5 s of the resume."""
    conf = {**DEFAULTS, "prismatic_backoff_initial_s": 3.0, "prismatic_backoff_max_s": 3.0,
            "prismatic_backoff_jitter_s": 0}
    with two_workers(redis_url, namespace, conf) as (app, workers):
        held = [app.tasks["basic.stamp"].apply_async((f"held{i}",), queue="cache", countdown=1.5) for i in range(4)]
        for i in range(25):
            app.tasks["basic.flaky"].apply_async((f"s{i}", 1), queue="storage", ignore_result=True)
        wait_for(lambda: stream(client, namespace, "resume"), timeout_s=30, message="storage recovered")
        resumed = float(stream(client, namespace, "resume")[0]["at"])
        assert stream(client, namespace, "pause")[0]["reason"] == "rest_for_one"
        ran = [r.get(timeout=30) for r in held]
        deferred = sum(w.log.count("supervision-deferred") for w in workers)
        assert deferred >= 1, "the held messages came due while cache was paused"
        late = [round(t - resumed, 3) for t in ran]
        assert all(t - resumed <= 1.5 for t in ran), f"ran {late} s after the resume"
        assert all(client.get(f"runs:held{i}") == "1" for i in range(4))
        print(f"\nheld messages ran {late} s after the resume ({deferred} deferrals)")


COOLDOWN_S = 8.0


def test_a_rest_for_one_resume_never_ends_a_cooldown(redis_url: str, namespace: str, client: redis.Redis) -> None:
    """Given telemetry paused for a cool-down (8 s: longer than the steps before the check take on a busy machine)
    and by storage's rest_for_one, and cache by storage's rest_for_one only, when storage succeeds, then cache
    resumes at once and telemetry stays paused until its cool-down ends."""
    with two_workers(redis_url, namespace, DEFAULTS) as (app, workers):
        runtime = get_runtime(app)
        assert runtime is not None
        keys, store = Keys(namespace), runtime.store
        now = store.time()
        for queue in ("cache", "telemetry"):
            set_pause(store, keys, Pause(queue, "core", "rest_for_one", "storage", now, now + 30))
        set_pause(store, keys, Pause("telemetry", "core", "cooldown", "storage", now, now + COOLDOWN_S))
        wait_for(lambda: all(not ({"cache", "telemetry"} & q) for q in consuming(app, workers).values()),
                 timeout_s=10, message="cache and telemetry paused")
        waiting = app.tasks["basic.stamp"].apply_async(("t",), queue="telemetry")
        assert app.tasks["basic.record"].apply_async(("s",), queue="storage").get(timeout=10) == "s"
        wait_for(lambda: all("cache" in q for q in consuming(app, workers).values()), timeout_s=5,
                 message="cache resumed by storage's recovery")
        assert [e.get("child") for e in stream(client, namespace, "resume")] == ["storage"]
        pauses = read_pauses(store, keys, runtime.supervisor, ["cache", "telemetry"])
        assert set(pauses) == {"telemetry"} and pauses["telemetry"].causes == ("cooldown",)
        assert rest_cause("storage") not in pauses["telemetry"].causes
        assert client.get("runs:t") is None and store.time() < now + COOLDOWN_S, "telemetry waits for its cool-down"
        ran = waiting.get(timeout=30)
        assert now + COOLDOWN_S <= ran <= now + COOLDOWN_S + 1.5, f"ran {ran - now:.2f} s after the cool-down began"


def test_a_hundred_dead_lettered_value_errors_are_one_escalation_at_most_110_lines_and_no_critical_line(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Given 100 logic errors (one pattern) among 900 good messages, then each runs once and is dead-lettered
    (WARNING), one escalation event names the new failure pattern (WARNING), the plugin writes at most 110 lines
    at INFO, none CRITICAL, and the knowledge metrics count 100 dead letters apart from 1 escalation."""
    with two_workers(redis_url, namespace, DEFAULTS) as (app, workers):
        results = []
        for i in range(1000):
            if i % 10 == 0:
                results.append(app.tasks["basic.fetch_fail"].apply_async((f"invalid payload {i}",), queue="sources"))
            else:
                results.append(app.tasks["basic.record"].apply_async((f"g{i}",), queue="sources"))
        for result in results:
            result.get(timeout=60, propagate=False)
        runtime = get_runtime(app)
        assert runtime is not None and runtime.learning is not None
        wait_for(lambda: runtime.dlq.count("osint") == 100, timeout_s=10, message="100 dead letters")
        letters = runtime.dlq.list("osint", limit=200)
        assert len({letter["id"] for letter in letters}) == 100 and all(letter["attempts"] == 1 for letter in letters)
        escalations = stream(client, namespace, "escalation")
        assert [e["reason"] for e in escalations] == ["unknown_failure_pattern"]
        assert len(stream(client, namespace, "dead_letter")) == 100
        logs = "".join(w.log for w in workers)
        assert logs.count("event=supervision-dead-letter") == 100
        assert "CRITICAL" not in logs
        logged = plugin_lines(logs)
        assert len(logged) <= 110, "\n".join(logged)
        assert logs.count("File ") == 0 or all(
            tb.count("/prismatic_celery/") <= 1 for tb in logs.split("Traceback (most recent call last):")[1:]), \
            "one plugin frame per task traceback"
        metrics = runtime.learning.metrics.snapshot()
        assert (metrics.dead_letters, metrics.escalations) == (100, 1)
        assert stream(client, namespace, "restart") == [], "10 % failures on a busy queue: the child is fine"


def test_celerys_own_retries_keep_celerys_behaviour_and_counts(redis_url: str, namespace: str,
                                                               client: redis.Redis) -> None:
    """autoretry_for=(ConnectionError,), max_retries=3: three failures then success end SUCCESS untouched by the
    plugin; with four failures Celery gives up and the plugin re-runs it, request.retries still Celery's 3."""
    with two_workers(redis_url, namespace, DEFAULTS) as (app, _):
        task = app.tasks["basic.autoretry"]
        three, four = task.apply_async(("three", 3), queue="storage"), task.apply_async(("four", 4), queue="storage")
        assert three.get(timeout=30) == 3 and three.state == "SUCCESS"
        assert [json.loads(e) for e in client.lrange("executions:three", 0, -1)] == [
            {"retries": r, "reruns": 0} for r in range(4)], "Celery's retries, nothing from the plugin"
        assert not [e for e in failure_events(client, namespace) if e.get("task_id") == three.id]
        assert four.get(timeout=30) == 3 and four.state == "SUCCESS"
        assert [json.loads(e) for e in client.lrange("executions:four", 0, -1)] == [
            *({"retries": r, "reruns": 0} for r in range(4)), {"retries": 3, "reruns": 1}]
        [remediation] = [e for e in failure_events(client, namespace) if e.get("task_id") == four.id]
        assert remediation["type"] == "remediation" and remediation["attempt"] == "1"


def test_a_temporary_childs_message_whose_process_dies_runs_once_and_fails_with_worker_lost_error(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """A temporary child: the pool process dies running its message; it is not run again nor dead-lettered, and its
    result is Celery's WorkerLostError, as without the plugin."""
    domains = {**DOMAINS, "scratch": {"children": [{"queue": "scratch", "restart": "temporary"}]}}
    conf = {**DEFAULTS, "prismatic_domains": domains}
    with two_workers(redis_url, namespace, conf, pools=("prefork", "prefork")) as (app, _):
        dying = app.tasks["basic.poison"].apply_async(("tmp",), queue="scratch")
        dying.get(timeout=30, propagate=False)
        assert dying.state == "FAILURE" and type(dying.result).__name__ == "WorkerLostError", repr(dying.result)
        time.sleep(2.0)  # a re-run would have happened by now (the default backoff is 1 s)
        assert client.get("runs:tmp") == "1"
        runtime = get_runtime(app)
        assert runtime is not None and runtime.dlq.count("scratch") == 0
        [crash] = failure_events(client, namespace, "scratch")
        assert crash["type"] == "crash" and crash["outcome"] == "temporary"
