"""Outcome counters, in-process, through Celery's own tracer (the code path a worker runs)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from celery import Celery, signals
from celery.app.trace import build_tracer

from prismatic_celery import install
from prismatic_celery.observability.observer import STATS_TTL_S, TaskStats
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.store.memory import MemoryStore
from prismatic_celery.supervision.requeue import requeue
from prismatic_celery.supervision.window import executions_key
from prismatic_celery.worker.task import TaskGuard, set_pipeline, task_pipeline

DOMAINS = {"core": {"children": ["storage"]}}


class Unencodable:
    """A result the JSON serializer refuses (Celery then fails the task after its body returned)."""


def _app() -> tuple[Celery, Runtime]:
    app = Celery("obs", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_send_events=False, prismatic_store_url="memory://",
                    prismatic_max_restarts_per_message=0, task_store_errors_even_if_ignored=True,
                    prismatic_circuits={"dep": {"fail_max": 1}})
    install(app, store=MemoryStore())

    @app.task(name="obs.work", shared=False)
    def work(kind: str) -> Any:
        if kind == "boom":
            raise ValueError("boom")
        return Unencodable() if kind == "unencodable" else "ok"

    @app.task(name="obs.dep", shared=False, circuits=["dep"])
    def dep() -> str:
        return "ok"

    @app.task(name="obs.plain", shared=False, supervise=False)
    def plain() -> str:
        return "ok"

    app.finalize()
    runtime = get_runtime(app)
    assert runtime is not None
    return app, runtime


def _trace(app: Celery, name: str, *args: Any, queue: str = "storage") -> Any:
    task = app.tasks[name]
    tracer = build_tracer(name, task, app=app, hostname="w1@test", eager=False)
    request = {"id": f"id-{args}", "hostname": "w1@test", "delivery_info": {"routing_key": queue, "queue": queue},
               "retries": 0, "is_eager": False}
    return tracer(request["id"], args, {}, request)


def _counts(runtime: Runtime) -> dict[str, int]:
    stats = runtime.stats
    stats.flush()
    raw = runtime.store.hgetall(runtime.keys.key("stats", "w1@test"))
    return {k: int(v) for k, v in raw.items()}


def test_a_success_and_a_failure_are_each_counted_once() -> None:
    app, runtime = _app()
    _trace(app, "obs.work", "ok")
    _trace(app, "obs.work", "boom")
    assert _counts(runtime) == {"storage:started": 2, "storage:succeeded": 1, "storage:failed": 1}
    ttl = runtime.store.ttl(runtime.keys.key("stats", "w1@test"))
    assert ttl is not None and 0 < ttl <= STATS_TTL_S, "a worker's counters expire when it stops reporting"


def test_a_result_celery_cannot_encode_is_a_failure_not_a_success() -> None:
    """The body returned, then storing the result failed: Celery reports a failure, and so do the counters."""
    app, runtime = _app()
    failures: list[Any] = []

    def on_failure(sender: Any = None, exception: Any = None, **_: Any) -> None:
        failures.append(exception)

    signals.task_failure.connect(on_failure, weak=False)
    try:
        _trace(app, "obs.work", "unencodable")
    finally:
        signals.task_failure.disconnect(on_failure)
    assert failures, "Celery failed the task"
    assert _counts(runtime) == {"storage:started": 1, "storage:failed": 1}


def test_an_opted_out_task_and_an_unsupervised_queue_are_still_counted() -> None:
    app, runtime = _app()
    _trace(app, "obs.plain")
    _trace(app, "obs.work", "ok", queue="elsewhere")
    assert _counts(runtime) == {"storage:started": 1, "storage:succeeded": 1, "-:started": 1, "-:succeeded": 1}


class Full(TaskGuard):
    """A bulkhead with no free slot: every message goes back to its queue before its body runs."""

    def before_run(self, task: Any, request: Any) -> None:
        requeue(task, countdown_s=1.0, retries=0)


def test_a_deferral_counts_as_deferred_not_as_a_start_or_a_retry() -> None:
    """A full bulkhead and an open circuit put the message back before its body runs: deferred, once each;
    a retry the body asks for stays a start and a retry."""
    app, runtime = _app()
    set_pipeline(runtime, task_pipeline(runtime, guards=(Full(),)))
    _trace(app, "obs.work", "ok")
    set_pipeline(runtime, None)
    runtime.circuits.open_for("dep", 60_000)
    _trace(app, "obs.dep")
    assert _counts(runtime) == {"storage:deferred": 2}
    retried = app.tasks["obs.plain"]
    retried.run = lambda: retried.retry(countdown=1)  # type: ignore[method-assign]
    _trace(app, "obs.plain")
    assert _counts(runtime) == {"storage:deferred": 2, "storage:started": 1, "storage:retried": 1}


def test_an_execution_is_counted_as_it_ends() -> None:
    """Start and success are counted together when the body returns (one lock per task): a task still running is
    not counted yet; a body that ends otherwise (its own ``Ignore``, an exception) still counts its start."""
    from celery.exceptions import Ignore

    app, runtime = _app()
    seen: list[dict[str, int]] = []
    task = app.tasks["obs.plain"]

    def body() -> str:
        seen.append(_counts(runtime))
        return "ok"

    task.run = body  # type: ignore[method-assign]
    _trace(app, "obs.plain")
    assert seen == [{}], "nothing is counted while the body runs"
    assert _counts(runtime) == {"storage:started": 1, "storage:succeeded": 1}

    def ignored() -> str:
        raise Ignore()

    task.run = ignored  # type: ignore[method-assign]
    _trace(app, "obs.plain")
    assert _counts(runtime) == {"storage:started": 2, "storage:succeeded": 1}


def test_a_direct_call_is_not_an_execution_and_is_not_counted() -> None:
    app, runtime = _app()
    assert app.tasks["obs.work"]("ok") == "ok"
    assert _counts(runtime) == {}


@pytest.mark.parametrize("signal", [signals.task_prerun, signals.task_success])
def test_the_success_path_connects_no_per_task_signal_receiver(signal: Any) -> None:
    """Celery's tracer skips a signal with no receivers: the plugin must not add one to the success path."""
    _app()

    def ours(sig: Any) -> list[Any]:
        return [key for key, _ in sig.receivers if "prismatic" in str(key)]

    assert ours(signals.task_failure), "failures are counted by a signal receiver (rare path)"
    assert ours(signal) == []


def _window_successes(store: MemoryStore, keys: Keys, queue: str) -> int:
    return sum(int(v) for f, v in store.hgetall(executions_key(keys, queue)).items() if f.endswith(":ok"))


def test_counts_of_many_threads_are_each_flushed_once_while_flushes_run() -> None:
    """4 threads counting while another flushes lose nothing and count nothing twice, in the counters and in the
    execution window."""
    store, keys = MemoryStore(), Keys("obsunit")
    stats = TaskStats(store, keys, window_s=60.0, flush_s=3600.0)
    done = threading.Event()

    def counting() -> None:
        for _ in range(20_000):
            stats.count("w1@test", "storage", "succeeded")

    def flushing() -> None:
        while not done.is_set():
            stats.flush()
            stats.window.flush()

    workers = [threading.Thread(target=counting) for _ in range(4)]
    flusher = threading.Thread(target=flushing)
    flusher.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    flusher.join()
    stats.flush_all()
    assert store.hgetall(keys.key("stats", "w1@test")) == {"storage:succeeded": "80000"}
    assert _window_successes(store, keys, "storage") == 80_000


def test_a_crash_takes_the_successes_no_flush_has_added_and_a_correction_is_no_success() -> None:
    """What a crash takes is never flushed again and what was flushed is never taken; a success Celery later
    failed (-1) corrects the counters, not the window."""
    store, keys = MemoryStore(), Keys("obsunit2")
    stats = TaskStats(store, keys, window_s=60.0, flush_s=3600.0)
    for _ in range(5):
        stats.count("w1@test", "storage", "succeeded")
    taken = stats.take_successes("storage")  # the background flush may have added some already
    stats.window.flush()
    assert taken + _window_successes(store, keys, "storage") == 5
    assert stats.take_successes("storage") == 0
    for _ in range(3):
        stats.count("w1@test", "storage", "succeeded")
    stats.count("w1@test", "storage", "succeeded", -1)
    stats.flush_all()
    assert taken + _window_successes(store, keys, "storage") == 8
    assert store.hgetall(keys.key("stats", "w1@test")) == {"storage:succeeded": "7"}
