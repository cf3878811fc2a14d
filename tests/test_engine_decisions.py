"""The engine's decisions for one crash, in-process, with the store counted."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.connection
from celery import Celery
from celery.exceptions import Retry

from prismatic_celery import (
    MemoryStore,
    SupervisionEvent,
    SupervisionListener,
    get_runtime,
    install,
)
from prismatic_celery.circuits import CircuitOpenError
from prismatic_celery.engine.pauses import Pause, read_pauses, set_pause
from prismatic_celery.runtime import Runtime
from tests.conftest import RedisServer

DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": ["storage", "cache", "telemetry"]},
    "jobs": {"children": [{"queue": "transient", "restart": "transient", "normal_exceptions": ["KeyError"]},
                          {"queue": "temporary", "restart": "temporary"}]},
}


class Recorder(SupervisionListener):
    def __init__(self) -> None:
        self.events: list[SupervisionEvent] = []

    def _record(self, event: SupervisionEvent) -> None:
        self.events.append(event)

    on_crash = on_restart = on_pause = on_resume = on_escalation = _record

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def _app(store_url: str | None = None, **conf: Any) -> tuple[Celery, Runtime, Recorder]:
    app = Celery("dec", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_send_events=False, prismatic_store_url=store_url or "memory://",
                    prismatic_backoff_initial_ms=100, prismatic_backoff_max_ms=400, prismatic_backoff_jitter_ms=0,
                    **conf)
    recorder = Recorder()
    install(app, listeners=[recorder], store=None if store_url else MemoryStore())

    @app.task(name="dec.work", shared=False)
    def work(kind: str) -> str:
        if kind == "key":
            raise KeyError("normal")
        if kind == "boom":
            raise ConnectionError("refused")
        return "ok"

    runtime = get_runtime(app)
    assert runtime is not None
    return app, runtime, recorder


def _crash(app: Celery, runtime: Runtime, queue: str, exc: BaseException, retries: int = 0,
           task_id: str = "t-1") -> Retry | None:
    task = app.tasks["dec.work"]
    task.push_request(id=task_id, delivery_info={"routing_key": queue}, retries=retries, called_directly=False,
                      hostname="w@test", args=("boom",), kwargs={})
    try:
        runtime.engine.on_crash(task, exc)
    except Retry as retry:
        return retry
    finally:
        task.pop_request()
    return None


def test_a_permanent_child_is_restarted_with_backoff_and_counted() -> None:
    """A crash re-runs the message after the default backoff and counts one restart."""
    app, runtime, recorder = _app()
    retry = _crash(app, runtime, "storage", ConnectionError("refused"))
    assert retry is not None and retry.when == pytest.approx(0.1, abs=0.001)
    assert recorder.types() == ["crash", "pause", "restart"]
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {"storage": "1"}
    second = _crash(app, runtime, "storage", ConnectionError("refused"), retries=2, task_id="t-2")
    assert second is not None and second.when == pytest.approx(0.4, abs=0.001), "exponential, capped at max"


def test_a_transient_child_is_not_restarted_for_a_normal_exception() -> None:
    """transient: a declared normal exception ends the message without a restart; others restart."""
    app, runtime, recorder = _app()
    assert _crash(app, runtime, "transient", KeyError("normal")) is None
    assert recorder.types() == ["crash"]
    assert _crash(app, runtime, "transient", ConnectionError("abnormal")) is not None


def test_a_temporary_child_is_recorded_but_never_restarted() -> None:
    """temporary: the crash counts, the message is not re-run."""
    app, runtime, recorder = _app()
    assert _crash(app, runtime, "temporary", ConnectionError("x")) is None
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {}
    assert recorder.types() == ["crash"]
    entries = [f for _, f in runtime.store.stream_range(runtime.keys.key("events"), 10)]
    assert [(e["type"], e["child"], e["outcome"]) for e in entries] == [("crash", "temporary", "retry_with_backoff")]


def test_a_message_out_of_restarts_fails_and_escalates() -> None:
    """After max_restarts_per_message re-runs, the failure is final and escalated."""
    app, runtime, recorder = _app(prismatic_max_restarts_per_message=2)
    assert _crash(app, runtime, "storage", ConnectionError("x"), retries=2) is None
    assert recorder.types() == ["crash", "escalation"]
    assert recorder.events[-1].fields["reason"] == "message_restarts_exhausted"
    [letter] = runtime.dlq.list("core")
    assert letter["reason"] == "restarts_exhausted" and letter["args"] == ["boom"] and letter["attempts"] == 3


def test_unsupervised_queues_are_left_alone() -> None:
    """A task delivered on a queue outside the tree fails exactly as in plain Celery."""
    app, runtime, recorder = _app()
    assert _crash(app, runtime, "celery", ValueError("x")) is None
    assert recorder.types() == []


def test_a_task_on_a_paused_queue_is_deferred_without_spending_a_restart() -> None:
    """before_run re-queues a message whose queue is paused, keeping its retry count."""
    app, runtime, _ = _app()
    now = runtime.store.time()
    set_pause(runtime.store, runtime.keys, Pause("cache", "core", "manual", "test", now, now + 5))
    task = app.tasks["dec.work"]
    task.push_request(id="d-1", delivery_info={"routing_key": "cache"}, retries=3, called_directly=False,
                      args=("ok",), kwargs={})
    try:
        with pytest.raises(Retry) as deferred:
            runtime.engine.before_run(task)
    finally:
        task.pop_request()
    assert 4.0 < deferred.value.when <= 5.0
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {}


def test_success_of_the_failed_child_ends_the_pauses_it_caused() -> None:
    """rest_for_one: when storage succeeds again, cache and telemetry are released."""
    app, runtime, recorder = _app()
    _crash(app, runtime, "storage", ConnectionError("refused"))
    assert set(read_pauses(runtime.store, runtime.keys, ["cache", "telemetry"])) == {"cache", "telemetry"}
    task = app.tasks["dec.work"]
    task.push_request(id="t-1", delivery_info={"routing_key": "storage"}, retries=1, called_directly=False)
    try:
        runtime.engine.after_success(task)
    finally:
        task.pop_request()
    assert read_pauses(runtime.store, runtime.keys, ["cache", "telemetry"]) == {}
    assert recorder.types()[-1] == "resume"


@pytest.mark.parametrize("queue", ["storage", "telemetry"])
def test_a_crash_decision_costs_one_store_round_trip(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
                                                     queue: str) -> None:
    """Counted on the wire to the store's own server: one decision (count, budgets, strategy, events) is one
    round trip, the EVALSHA of the restart script."""
    app, runtime, _ = _app(store_url=redis_server.url, prismatic_lessons=False)
    _crash(app, runtime, queue, ConnectionError("refused"), task_id="warm-up")  # loads the script once
    sent: list[bytes] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: redis.connection.Connection, command: Any, check_health: bool = True) -> None:
        if self.port == redis_server.port:
            packed = command if isinstance(command, (bytes, str)) else b"".join(command)
            sent.append(packed if isinstance(packed, bytes) else packed.encode())
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    retry = _crash(app, runtime, queue, ConnectionError("refused"), task_id="counted")
    assert retry is not None
    assert len(sent) == 1 and b"EVALSHA" in sent[0].upper()


def test_an_open_circuit_defers_without_a_crash_and_can_pause_the_child() -> None:
    """CircuitOpenError: the message is re-queued for the half-open time, no restart is counted, and with
    prismatic_circuit_pause_child the child's queue is paused meanwhile."""
    app, runtime, recorder = _app(prismatic_circuits={"api": {"fail_max": 1, "reset_timeout_s": 5}},
                                  prismatic_circuit_pause_child=True)
    runtime.circuits.open_for("api", 5000)
    with pytest.raises(CircuitOpenError) as opened:
        runtime.circuits.get("api").call(lambda: None)
    task = app.tasks["dec.work"]
    task.push_request(id="c-1", delivery_info={"routing_key": "cache"}, retries=2, called_directly=False,
                      args=("ok",), kwargs={})
    try:
        with pytest.raises(Retry) as deferred:
            runtime.engine.on_crash(task, opened.value)
    finally:
        task.pop_request()
    assert 4.0 < float(deferred.value.when) <= 5.0
    assert recorder.types() == [], "not a crash"
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {}
    pause = read_pauses(runtime.store, runtime.keys, ["cache"])["cache"]
    assert pause.reason == "circuit" and pause.by == "api"
