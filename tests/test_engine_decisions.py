"""The engine's decisions for one failed execution, in-process, with the store counted."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
import redis
import redis.connection
from celery import Celery
from celery.exceptions import Retry

from prismatic_celery import SupervisionEvent, SupervisionListener, install
from prismatic_celery.circuits import CircuitOpenError
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store.memory import MemoryStore
from prismatic_celery.supervision.crash import HEADER
from prismatic_celery.supervision.engine import DEFER_MAX_S
from prismatic_celery.supervision.pauses import Pause, read_pauses, rest_cause, set_pause
from tests.conftest import RedisServer

DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": ["storage", "cache", "telemetry"]},
    "jobs": {"children": [{"queue": "transient", "restart": "transient", "normal_exceptions": ["KeyError"]},
                          {"queue": "temporary", "restart": "temporary"}]},
}
#: Every failure is enough volume to judge the child: one failed execution trips it.
TRIP_AT_ONCE = {"prismatic_child_min_executions": 1}


class Recorder(SupervisionListener):
    def __init__(self) -> None:
        self.events: list[SupervisionEvent] = []

    def _record(self, event: SupervisionEvent) -> None:
        self.events.append(event)

    on_crash = on_restart = on_pause = on_resume = on_escalation = on_remediation = on_dead_letter = _record

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def _app(store_url: str | None = None, **conf: Any) -> tuple[Celery, Runtime, Recorder]:
    app = Celery("dec", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_send_events=False, prismatic_store_url=store_url or "memory://",
                    prismatic_backoff_initial_s=0.1, prismatic_backoff_max_s=0.4, prismatic_backoff_jitter_s=0,
                    **conf)
    recorder = Recorder()
    install(app, listeners=[recorder], store=None if store_url else MemoryStore())

    @app.task(name="dec.work", shared=False)
    def work(kind: str) -> str:
        return "ok"

    runtime = get_runtime(app)
    assert runtime is not None
    return app, runtime, recorder


def _crash(app: Celery, runtime: Runtime, queue: str, exc: BaseException, retries: int = 0,
           task_id: str = "t-1", attempt: int = 0, history: dict[str, Any] | None = None) -> Retry | None:
    task = app.tasks["dec.work"]
    headers = {HEADER: history} if history else {HEADER: {"attempt": attempt}} if attempt else {}
    task.push_request(id=task_id, delivery_info={"routing_key": queue}, retries=retries, called_directly=False,
                      hostname="w@test", args=("boom",), kwargs={}, **headers)
    try:
        runtime.engine.on_crash(task, exc)
    except Retry as retry:
        return retry
    finally:
        task.pop_request()
    return None


def _published(app: Celery, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What requeue publishes (the republished message's options), without a broker."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr("celery.canvas.Signature.apply_async", lambda self, *a, **k: sent.append(dict(self.options)))
    return sent


def test_a_failed_message_runs_again_with_backoff_and_is_not_a_child_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """One failure: a remediation re-runs it with the default backoff; no restart, no pause, no budget spent."""
    app, runtime, recorder = _app()
    sent = _published(app, monkeypatch)
    retry = _crash(app, runtime, "storage", ConnectionError("refused"), retries=3)
    assert retry is not None and retry.when == pytest.approx(0.1, abs=0.001)
    assert recorder.types() == ["remediation"]
    assert recorder.events[0].fields["attempt"] == 1
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {}
    assert read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["cache", "telemetry"]) == {}
    [options] = sent
    assert options["retries"] == 3, "request.retries stays Celery's"
    assert options["headers"][HEADER]["attempt"] == 1, "the plugin counts its re-runs in its own header"
    second = _crash(app, runtime, "storage", ConnectionError("refused"), task_id="t-2", attempt=2)
    assert second is not None and second.when == pytest.approx(0.4, abs=0.001), "exponential, capped at max"


def test_a_child_failing_at_a_high_rate_restarts_and_pauses_its_later_siblings() -> None:
    """20 failures in a row (the default minimum volume): one restart, cache and telemetry paused."""
    app, runtime, recorder = _app()
    for i in range(20):
        _crash(app, runtime, "storage", ConnectionError("refused"), task_id=f"t-{i}")
    assert recorder.types().count("remediation") == 20
    assert recorder.types().count("restart") == 1 and recorder.types().count("pause") == 1
    restart = next(e for e in recorder.events if e.type == "restart")
    assert restart.fields["executions"] == 20 and restart.fields["failures"] == 20
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {"storage": "1"}
    assert set(read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["cache", "telemetry"])) == {
        "cache", "telemetry"}


def test_a_transient_child_ends_a_normal_exception_as_plain_celery() -> None:
    """transient: a declared normal exception ends the message (no re-run, not a failure); others re-run."""
    app, runtime, recorder = _app()
    assert _crash(app, runtime, "transient", KeyError("normal")) is None
    assert recorder.types() == ["crash"] and recorder.events[0].fields["outcome"] == "normal_exit"
    assert runtime.store.hgetall(runtime.keys.key("executions", "transient")) == {}
    assert _crash(app, runtime, "transient", ConnectionError("abnormal")) is not None


def test_a_temporary_child_never_reruns_and_keeps_no_dead_letter() -> None:
    """temporary: the failure is recorded and counted in the child's window; the message fails as in plain Celery."""
    app, runtime, recorder = _app()
    assert _crash(app, runtime, "temporary", ConnectionError("x")) is None
    assert recorder.types() == ["crash"] and recorder.events[0].fields["outcome"] == "temporary"
    assert runtime.dlq.count("jobs") == 0
    assert runtime.store.hgetall(runtime.keys.key("executions", "temporary")), "it counts as a failed execution"
    entries = [f for _, f in runtime.store.stream_range(runtime.keys.key("events"), 10)]
    assert [(e["type"], e["child"], e["outcome"]) for e in entries] == [("crash", "temporary", "temporary")]


def test_a_message_out_of_reruns_is_dead_lettered_without_an_escalation() -> None:
    """After max_restarts_per_message re-runs (the plugin's header, not request.retries) it is a dead letter."""
    app, runtime, recorder = _app(prismatic_max_restarts_per_message=2)
    assert _crash(app, runtime, "storage", ConnectionError("x"), retries=7) is not None, "Celery's retries don't count"
    assert _crash(app, runtime, "storage", ConnectionError("x"), attempt=2, task_id="t-2") is None
    assert recorder.types() == ["remediation", "dead_letter"]
    assert recorder.events[-1].fields["reason"] == "restarts_exhausted"
    [letter] = runtime.dlq.list("core")
    assert letter["reason"] == "restarts_exhausted" and letter["args"] == ["boom"] and letter["attempts"] == 3


def test_an_unknown_failure_escalates_once_per_pattern_and_never_at_critical(caplog: pytest.LogCaptureFixture) -> None:
    """100 ValueErrors of one kind: 100 dead letters (WARNING), one escalation event (WARNING), no CRITICAL line;
    the knowledge metrics count them apart."""
    app, runtime, recorder = _app()
    with caplog.at_level(logging.INFO, logger="prismatic_celery"):
        for i in range(100):
            assert _crash(app, runtime, "storage", ValueError(f"bad payload {i}"), task_id=f"v-{i}") is None
    assert recorder.types().count("dead_letter") == 100
    assert recorder.types().count("escalation") == 1
    assert runtime.dlq.count("core") == 100
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    escalations = [r for r in caplog.records if "supervision-escalation" in r.getMessage()]
    assert len(escalations) == 1 and escalations[0].levelno == logging.WARNING
    assert runtime.learning is not None
    metrics = runtime.learning.metrics.snapshot()
    assert metrics.dead_letters == 100 and metrics.escalations == 1 and metrics.crashes == 100


def test_a_domain_escalation_is_the_one_critical_line(caplog: pytest.LogCaptureFixture) -> None:
    """The supervisor's budget exhausted: CRITICAL once, the domain paused."""
    app, runtime, _ = _app(prismatic_domain_budget={"max_restarts": 0, "period_s": 60},
                           prismatic_supervisor_budget={"max_restarts": 0, "period_s": 300}, **TRIP_AT_ONCE)
    with caplog.at_level(logging.INFO, logger="prismatic_celery"):
        _crash(app, runtime, "storage", ConnectionError("x"))
    critical = [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert len(critical) == 1 and "supervisor_budget_exceeded" in critical[0].getMessage()
    assert read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["storage"])["storage"].reason == "escalated"


def test_unsupervised_queues_are_left_alone() -> None:
    """A task delivered on a queue outside the tree fails exactly as in plain Celery."""
    app, runtime, recorder = _app()
    assert _crash(app, runtime, "celery", ValueError("x")) is None
    assert recorder.types() == []


def test_a_task_on_a_paused_queue_comes_back_within_a_second_without_spending_anything() -> None:
    """before_run re-queues a message whose queue is paused for 30 s to come back within DEFER_MAX_S,
    keeping its retry count; no failure is counted."""
    app, runtime, _ = _app()
    now = runtime.store.time()
    set_pause(runtime.store, runtime.keys, Pause("cache", "core", "manual", "test", now, now + 30))
    task = app.tasks["dec.work"]
    task.push_request(id="d-1", delivery_info={"routing_key": "cache"}, retries=3, called_directly=False,
                      args=("ok",), kwargs={})
    try:
        with pytest.raises(Retry) as deferred:
            runtime.engine.before_run(task)
    finally:
        task.pop_request()
    assert 0 < float(deferred.value.when) <= DEFER_MAX_S
    assert runtime.store.hgetall(runtime.keys.key("executions", "cache")) == {}


def test_a_pause_that_ended_since_the_view_was_read_does_not_defer() -> None:
    """The view may be a period old: a pause it shows is read again before deferring."""
    app, runtime, _ = _app()
    now = runtime.store.time()
    set_pause(runtime.store, runtime.keys, Pause("cache", "core", "manual", "test", now, now + 30))
    assert runtime.engine.pauses.current()
    runtime.store.delete(runtime.keys.key("pause", "cache", "manual"))
    task = app.tasks["dec.work"]
    task.push_request(id="d-2", delivery_info={"routing_key": "cache"}, retries=0, called_directly=False)
    try:
        runtime.engine.before_run(task)  # no Retry
    finally:
        task.pop_request()


def test_success_of_the_failed_child_ends_the_pauses_it_caused_and_nothing_else() -> None:
    """rest_for_one: when storage succeeds again, its pauses of cache and telemetry end; a cool-down stays."""
    app, runtime, recorder = _app(**TRIP_AT_ONCE)
    _crash(app, runtime, "storage", ConnectionError("refused"))
    now = runtime.store.time()
    set_pause(runtime.store, runtime.keys, Pause("telemetry", "core", "cooldown", "cache", now, now + 5))
    task = app.tasks["dec.work"]
    task.push_request(id="t-1", delivery_info={"routing_key": "storage"}, retries=0, called_directly=False)
    try:
        runtime.engine.after_success(task)
    finally:
        task.pop_request()
    pauses = read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["cache", "telemetry"])
    assert set(pauses) == {"telemetry"} and pauses["telemetry"].causes == ("cooldown",)
    assert recorder.types()[-1] == "resume"
    assert rest_cause("storage") not in pauses["telemetry"].causes


def _count_round_trips(monkeypatch: pytest.MonkeyPatch, port: int) -> list[bytes]:
    sent: list[bytes] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: redis.connection.Connection, command: Any, check_health: bool = True) -> None:
        if self.port == port:
            packed = command if isinstance(command, (bytes, str)) else b"".join(command)
            sent.append(packed if isinstance(packed, bytes) else packed.encode())
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    return sent


@pytest.mark.parametrize("queue", ["storage", "telemetry"])
def test_a_failure_costs_one_store_round_trip_without_lessons(redis_server: RedisServer,
                                                               monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    """Counted on the wire to the store's own server: the failure, the child's verdict, the strategy and the
    events are one round trip, the EVALSHA of the restart script."""
    app, runtime, _ = _app(store_url=redis_server.url, prismatic_lessons=False)
    _published(app, monkeypatch)
    _crash(app, runtime, queue, ConnectionError("refused"), task_id="warm-up")  # loads the script once
    sent = _count_round_trips(monkeypatch, redis_server.port)
    assert _crash(app, runtime, queue, ConnectionError("refused"), task_id="counted") is not None
    assert len(sent) == 1 and b"EVALSHA" in sent[0].upper()


@pytest.mark.parametrize("error", [ConnectionError("refused"), ValueError("bad")], ids=["rerun", "dead-letter"])
def test_a_failure_costs_two_store_round_trips_with_lessons(redis_server: RedisServer,
                                                            monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """With lessons on: the lesson (read and counted), then everything else pipelined (failure, child, knowledge,
    dead letter) in one more."""
    app, runtime, _ = _app(store_url=redis_server.url)
    _published(app, monkeypatch)
    _crash(app, runtime, "storage", type(error)(str(error)), task_id="warm-up")
    sent = _count_round_trips(monkeypatch, redis_server.port)
    _crash(app, runtime, "storage", error, task_id="counted")
    assert len(sent) == 2, [s[:80] for s in sent]


def test_an_open_circuit_defers_without_a_failure_and_can_pause_the_child() -> None:
    """CircuitOpenError: the message is re-queued for the half-open time, no failure is counted, and with
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
    assert recorder.types() == [], "not a failure"
    assert runtime.store.hgetall(runtime.keys.key("executions", "cache")) == {}
    pause = read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["cache"])["cache"]
    assert pause.reason == "circuit" and pause.by == "api"


# lessons: candidates, per-attempt outcomes, operators ------------------------------------------------
def _succeed(app: Celery, runtime: Runtime, task_id: str, history: dict[str, Any]) -> None:
    """A re-run carrying ``history`` succeeds (what SupervisedTask.__call__ reports after the body returned)."""
    task = app.tasks["dec.work"]
    task.push_request(id=task_id, delivery_info={"routing_key": "storage"}, called_directly=False,
                      **{HEADER: history})
    try:
        runtime.engine.after_success(task)
    finally:
        task.pop_request()


def _rerun_history(sent: list[dict[str, Any]]) -> dict[str, Any]:
    history = sent[-1]["headers"][HEADER]
    assert isinstance(history, dict)
    return history


def test_a_failed_remediation_makes_the_re_run_climb_the_ladder_and_is_recorded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ConnectionError: the network rule's backoff first; its re-run fails again, so that attempt's failure
    is recorded in the lesson and the next candidate (a fresh process) is applied, then a patient retry; a
    message that failed again never comes back sooner than the default backoff for its attempt."""
    app, runtime, recorder = _app(prismatic_lesson_exploration=0)
    sent = _published(app, monkeypatch)
    _crash(app, runtime, "storage", ConnectionError("reset by peer"), task_id="m-1")
    first = _rerun_history(sent)
    assert first["action"] == "retry_with_backoff" and first["rule"] == "default.network"
    retry = _crash(app, runtime, "storage", ConnectionError("reset by peer"), task_id="m-1", history=first)
    second = _rerun_history(sent)
    assert second["label"] == "recycle_process" and second["rule"] == "lesson.ladder"
    assert retry is not None and float(retry.when) >= 0.2, "attempt 2: at least the default backoff (0.1 s x 2)"
    _crash(app, runtime, "storage", ConnectionError("reset by peer"), task_id="m-1", history=second)
    third = _rerun_history(sent)
    assert third["label"] == "retry_with_backoff(400,400,0)" and third["attempt"] == 3
    assert runtime.learning is not None
    lesson = runtime.learning.lessons.get(third["fp"])
    assert lesson is not None
    assert {label: (s.failed, s.succeeded) for label, s in lesson.remediations.items()} == {
        first["label"]: (1, 0), second["label"]: (1, 0)}
    assert [e.fields["rule"] for e in recorder.events] == ["default.network", "lesson.ladder", "lesson.ladder"]


def test_a_recycles_re_run_in_another_older_process_is_no_trial_of_the_recycle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh process fixes a stale connection, but the re-run ran in a sibling that was already running (with
    the same stale state): that failure is not counted against the recycle, and this process is recycled too.
    The same failure in the process the recycle replaced, or in one started after it, is the recycle's failure."""
    app, runtime, _ = _app(prismatic_lesson_exploration=0)
    sent = _published(app, monkeypatch)
    assert _crash(app, runtime, "storage", AssertionError("cache invariant violated"), task_id="r-1") is not None
    recycled = _rerun_history(sent)
    assert recycled["label"] == "recycle_process"
    sibling = {**recycled, "pid": os.getpid() + 1}  # recycled another process; this one started before the crash
    monkeypatch.setattr("prismatic_celery.supervision.crash.process_started_at", lambda: recycled["applied_at"] - 60)
    _crash(app, runtime, "storage", AssertionError("cache invariant violated"), task_id="r-1", history=sibling)
    again = _rerun_history(sent)
    assert again["label"] == "recycle_process" and again["remediations"] == ["recycle_process"]
    assert runtime.learning is not None
    lesson = runtime.learning.lessons.get(recycled["fp"])
    assert lesson is not None and lesson.remediations == {}, "nothing counted against the recycle"
    monkeypatch.setattr("prismatic_celery.supervision.crash.process_started_at", lambda: recycled["applied_at"] + 1)
    _crash(app, runtime, "storage", AssertionError("cache invariant violated"), task_id="r-1", history=sibling)
    lesson = runtime.learning.lessons.get(recycled["fp"])
    assert lesson is not None and lesson.remediations["recycle_process"].failed == 1, "a fresh process failed too"


def test_a_re_run_that_succeeds_records_the_recovery_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The success of a re-run counts its remediation as recovered, with the time from its crash; a crash of a
    known pattern (its lesson held a remediation that qualified) whose re-run succeeded is auto-remediated."""
    app, runtime, _ = _app(prismatic_lesson_exploration=0)
    sent = _published(app, monkeypatch)
    _crash(app, runtime, "storage", ConnectionError("refused"), task_id="warm")
    assert _rerun_history(sent)["known"] is False, "seen once, no remediation proven yet"
    assert runtime.learning is not None
    fp, label = _rerun_history(sent)["fp"], _rerun_history(sent)["label"]
    for _ in range(3):
        runtime.learning.lessons.record_outcome(fp, label, True, recovery_s=0.5)
    _crash(app, runtime, "storage", ConnectionError("refused"), task_id="m-2")
    history = _rerun_history(sent)
    assert history["known"] is True and history["label"] == label
    _succeed(app, runtime, "m-2", history)
    assert runtime.learning is not None
    metrics = runtime.learning.metrics.snapshot()
    assert (metrics.known_pattern_crashes, metrics.recurring_crashes, metrics.auto_remediated) == (1, 1, 1)
    assert metrics.recoveries_by_action == {"retry_with_backoff": 1}
    assert metrics.mean_time_to_recovery_s is not None and 0 <= metrics.mean_time_to_recovery_s < 60
    lesson = runtime.learning.lessons.get(history["fp"])
    assert lesson is not None and lesson.remediations[history["label"]].succeeded == 4


def test_state_corruption_no_rule_names_is_remediated_by_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """No rule matches an AssertionError about broken state; its class's ladder recycles the process instead of
    dead-lettering it as an unknown pattern; a logic error is still dead-lettered."""
    app, runtime, recorder = _app()
    sent = _published(app, monkeypatch)
    assert _crash(app, runtime, "storage", AssertionError("cache invariant violated"), task_id="s-1") is not None
    assert _rerun_history(sent)["action"] == "recycle_process"
    assert _crash(app, runtime, "storage", ValueError("bad payload"), task_id="s-2") is None
    assert recorder.types()[-2:] == ["dead_letter", "escalation"]


def test_an_operator_taught_action_wins_over_a_default_rule_but_not_a_user_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, runtime, _ = _app(prismatic_remediation_rules=[
        {"match": {"message": "pinned"}, "action": "dead_letter", "name": "pin"}])
    sent = _published(app, monkeypatch)
    _crash(app, runtime, "storage", ConnectionError("refused"), task_id="warm")
    assert runtime.learning is not None
    fp = _rerun_history(sent)["fp"]
    assert runtime.learning.lessons.teach(fp, {"action": "recycle_process"}) is not None
    _crash(app, runtime, "storage", ConnectionError("refused"), task_id="t-taught")
    assert _rerun_history(sent)["rule"] == "lesson.taught" and _rerun_history(sent)["action"] == "recycle_process"
    _crash(app, runtime, "storage", ConnectionError("pinned"), task_id="t-pin")
    pinned_fp = runtime.dlq.list("core")[-1]["fingerprint"]
    runtime.learning.lessons.teach(pinned_fp, {"action": "recycle_process"})
    assert _crash(app, runtime, "storage", ConnectionError("pinned"), task_id="t-pin-2") is None, "the rule pins"


def test_an_operators_successful_replay_of_a_dead_letter_is_recorded_in_its_lesson(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead letter replayed by an operator carries its fingerprint; its success is the lesson's resolution
    ``operator_replay`` (not an automatic remediation), and a replay that fails again counts against it."""
    app, runtime, _ = _app()
    assert _crash(app, runtime, "storage", ValueError("bad payload"), task_id="d-1") is None
    [letter] = runtime.dlq.list("core")
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **options: sent.append(options))
    assert runtime.dlq.replay(app, "core", "d-1") == "d-1"
    history = sent[0]["headers"][HEADER]
    assert history["fp"] == letter["fingerprint"] and history["label"] == "operator_replay"
    _succeed(app, runtime, "d-1", history)
    assert runtime.learning is not None
    lesson = runtime.learning.lessons.get(letter["fingerprint"])
    assert lesson is not None and lesson.remediations["operator_replay"].succeeded == 1
    metrics = runtime.learning.metrics.snapshot()
    assert metrics.auto_remediated == 0 and metrics.recoveries_by_action == {"operator_replay": 1}
    _crash(app, runtime, "storage", ValueError("bad payload"), task_id="d-2", history=history)
    lesson = runtime.learning.lessons.get(letter["fingerprint"])
    assert lesson is not None and lesson.remediations["operator_replay"].failed == 1
