"""Load shedding in-process: the importance rule, the settings, the state script, parking and the guard."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals
from celery.contrib.testing.mocks import TaskMessage
from celery.worker.request import Request

from prismatic_celery import ConfigurationError, SupervisionEvent, SupervisionListener, install
from prismatic_celery.admission.shedding import (
    QueuePolicy,
    Sampler,
    ShedGuard,
    ShedView,
    park,
    parked_key,
    peek,
    publish_sample,
    purge,
    read_states,
    replay,
    state_key,
    totals_key,
)
from prismatic_celery.admission.shedding.priority import (
    PRIORITY_HEADER,
    importance_from_priority,
    mark_priority,
    message_importance,
    replayed,
)
from prismatic_celery.admission.shedding.sampler import SHEDDING_PERIOD_S
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store import Store
from prismatic_celery.store.keys import Keys
from prismatic_celery.store.memory import MemoryStore
from prismatic_celery.worker.services import shed_guard

DOMAINS = {"bulk": {"children": ["bulk", "reports"]}, "core": {"children": ["core"]}}


class Recorder(SupervisionListener):
    def __init__(self) -> None:
        self.events: list[SupervisionEvent] = []

    def on_shed(self, event: SupervisionEvent) -> None:
        self.events.append(event)


def _app(store: Store | None = None, **conf: Any) -> tuple[Celery, Runtime, Recorder]:
    app = Celery("shedunit", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_send_events=False, **conf)
    recorder = Recorder()
    install(app, listeners=[recorder], store=store or MemoryStore())

    @app.task(name="shedunit.work", shared=False)
    def work(x: Any = None) -> str:
        return "ran"

    @app.task(name="shedunit.minor", shared=False, importance=1)
    def minor() -> str:
        return "ran"

    runtime = get_runtime(app)
    assert runtime is not None
    return app, runtime, recorder


def _guard(runtime: Runtime) -> ShedGuard:
    guard = shed_guard(runtime)
    assert guard is not None
    return guard


def _shedding(runtime: Runtime, queue: str, backlog: int = 2000) -> None:
    """``queue`` sheds, as this worker's own sampler just saw it (the guard's estimate starts at ``backlog``)."""
    policy = QueuePolicy(queue, threshold=1000, resume_below=800, cutoff=5, mode="park")
    publish_sample(runtime.store, runtime.keys, {queue: backlog}, {queue: policy}, ttl_s=60, sampler="test")
    estimate = _guard(runtime).backlogs
    if estimate.clock is time.monotonic:  # a read stays fresh until the test moves the clock: a busy machine's
        _clocked(runtime)  # pauses between this read and the message must not make it stale (0.1 s)
    estimate.observe({queue: backlog}, estimate.receipts())


SHED = "shed"


def _deliver(task: Any, *, queue: str = "bulk", priority: int | None = None, headers: dict[str, Any] | None = None,
             args: tuple[Any, ...] = (), task_id: str = "id-1", marked: bool = True) -> tuple[Request, bool]:
    """A message from ``queue`` through the shedding guard, as in the worker's main process: the request, and
    whether it was shed (it is then acknowledged).

    ``priority`` is the message's priority property; ``marked``: its producer had the plugin, which recorded
    ``priority`` as the one it set (False: a producer without the plugin, or kombu's default priority)."""
    headers = dict(headers or {})
    if marked:
        mark_priority(headers, {"priority": priority})
    message = TaskMessage(task.name, id=task_id, kwargs={}, retries=2, root_id="root", **headers)
    message.payload = (list(args), {}, {"callbacks": None, "errbacks": None, "chain": None})  # any serializer
    message.delivery_info = {"exchange": "", "routing_key": queue}
    message.properties = {"priority": priority}
    acks: list[bool] = []
    request = Request(message, app=task.app, task=task, hostname="w1@test", on_ack=lambda *_: acks.append(True))
    guard = shed_guard(get_runtime(task.app))  # type: ignore[arg-type]
    shed = guard is not None and not guard.admit(request)
    assert acks == ([True] if shed else []), "a shed message is acknowledged, another is not"
    return request, shed


def _run(task: Any, *, args: tuple[Any, ...] = (), **delivery: Any) -> str:
    """Deliver a message (see :func:`_deliver`), then run the task as a pool process would; ``SHED`` when the
    guard took the message."""
    request, shed = _deliver(task, args=args, **delivery)
    if shed:
        return SHED
    context = request._context
    task.push_request(**{**context.__dict__, "called_directly": False, "is_eager": False})
    try:
        result: str = task(*args)
        return result
    finally:
        task.pop_request()


# -- the importance rule ------------------------------------------------------------------------
def test_priority_becomes_importance_in_the_brokers_own_order() -> None:
    """Redis consumes 0 first, so 0 is the most important there; AMQP consumes 9 first."""
    assert importance_from_priority(0, higher_first=False) == 9
    assert importance_from_priority(9, higher_first=False) == 0
    assert importance_from_priority(9, higher_first=True) == 9
    assert importance_from_priority(None, higher_first=True) is None
    assert importance_from_priority(42, higher_first=True) == 9, "clamped to 0..9"


def test_header_beats_task_option_beats_the_priority_the_producer_set() -> None:
    """A per-call header overrides the task's option, which overrides the priority the producer set (its mark);
    none means unknown, and so does a delivered priority no producer marked (kombu's default)."""
    app, _, _ = _app()
    minor, work = app.tasks["shedunit.minor"], app.tasks["shedunit.work"]
    for task, headers, priority, expected in [
        (work, {"prismatic_importance": 7, PRIORITY_HEADER: 9}, 9, 7),
        (minor, {"prismatic_importance": "8"}, None, 8),
        (minor, {PRIORITY_HEADER: 0}, 0, 1),
        (work, {PRIORITY_HEADER: 9}, 9, 0),
        (work, {PRIORITY_HEADER: None}, 0, None),
        (work, None, 9, None),
        (work, {"prismatic_importance": "high"}, None, None),
    ]:
        task.push_request(delivery_info={"priority": priority}, headers=headers)
        try:
            assert message_importance(task, higher_first=False) == expected, (task.name, headers, priority)
        finally:
            task.pop_request()
    work.push_request(headers={"prismatic_replayed": 1})
    assert replayed(work)
    work.pop_request()


def test_a_producer_marks_the_priority_it_set_and_a_re_publish_keeps_the_first_mark() -> None:
    """send_task without a priority is marked None (kombu then stamps 0), apply_async(priority=7) 7; a retry
    copies the delivered priority 0 as if explicit, but keeps the original's mark: still no importance."""
    app, _, _ = _app()
    sent: list[dict[str, Any]] = []

    def capture(headers: Any = None, properties: Any = None, **_: Any) -> None:
        sent.append({"mark": headers.get(PRIORITY_HEADER, "absent"), "priority": properties.get("priority")})

    signals.before_task_publish.connect(capture, weak=False)  # after the plugin's receiver
    try:
        work = app.tasks["shedunit.work"]
        app.send_task("shedunit.work", queue="bulk")
        work.apply_async(queue="bulk", priority=7)
        work.push_request(id="r1", headers={PRIORITY_HEADER: None}, delivery_info={"priority": 0, "routing_key": "bulk",
                                                                                    "exchange": ""})
        try:
            work.signature_from_request().apply_async()
        finally:
            work.pop_request()
    finally:
        signals.before_task_publish.disconnect(capture)
    assert sent == [{"mark": None, "priority": None}, {"mark": 7, "priority": 7}, {"mark": None, "priority": 0}]


def test_a_delivery_no_producer_marked_is_marked_none_so_its_re_publishes_stay_without_importance() -> None:
    """A producer without the plugin: kombu's priority 0 arrives unmarked; the guard marks it None as it arrives,
    so the retry or deferral the task publishes carries None, not the delivered 0 (importance 0 on RabbitMQ)."""
    app, _, _ = _app()
    request, shed = _deliver(app.tasks["shedunit.work"], priority=0, marked=False)
    assert not shed and request._context.headers[PRIORITY_HEADER] is None
    request, _ = _deliver(app.tasks["shedunit.work"], priority=3)
    assert request._context.headers[PRIORITY_HEADER] == 3


# -- settings -----------------------------------------------------------------------------------
def test_policies_merge_the_defaults_with_per_queue_overrides() -> None:
    """The lower mark defaults to 80% of the threshold; a queue may override any of the four."""
    _, runtime, _ = _app(prismatic_shed_queues={"reports": {"threshold": 50, "mode": "drop", "cutoff": 3}})
    guard = _guard(runtime)
    assert guard.policies["bulk"] == QueuePolicy("bulk", threshold=1000, resume_below=800, cutoff=5, mode="park")
    assert guard.policies["reports"] == QueuePolicy("reports", threshold=50, resume_below=40, cutoff=3, mode="drop")


@pytest.mark.parametrize(("conf", "setting"), [
    ({"prismatic_shed_mode": "parking"}, "prismatic_shed_mode"),
    ({"prismatic_shed_cutoff": 11}, "prismatic_shed_cutoff"),
    ({"prismatic_shed_threshold": 0}, "prismatic_shed_threshold"),
    ({"prismatic_shed_threshold": 100, "prismatic_shed_resume_below": 200}, "prismatic_shed_resume_below"),
    ({"prismatic_shed_queues": {"nope": {"threshold": 5}}}, "prismatic_shed_queues.nope"),
    ({"prismatic_shed_queues": {"bulk": {"treshold": 5}}}, "prismatic_shed_queues.bulk"),
    ({"prismatic_shed_queues": {"bulk": {"threshold": 10, "resume_below": 20}}},
     "prismatic_shed_queues.bulk.resume_below"),
    ({"prismatic_bulkhead_defer_s": -1}, "prismatic_bulkhead_defer_s"),
])
def test_bad_shedding_settings_fail_naming_the_setting(conf: dict[str, Any], setting: str) -> None:
    """Bad configuration fails when the runtime is built (worker start, `supervision check`)."""
    with pytest.raises(ConfigurationError) as caught:
        _app(**conf)
    assert setting in str(caught.value)


# -- the shared state (contract: memory, fakeredis, redis) ---------------------------------------
def test_shedding_state_follows_the_backlog_with_hysteresis(store: Store) -> None:
    """Starts above the threshold, lasts until below the lower mark, keeps its start time, expires."""
    keys = Keys("hyst")
    policy = {"q": QueuePolicy("q", threshold=1000, resume_below=800, cutoff=5, mode="park")}

    def sample(backlog: int) -> tuple[bool, bool, bool]:
        moved = publish_sample(store, keys, {"q": backlog}, policy, ttl_s=5, sampler="w1")[0]
        return moved.shedding, moved.started, moved.stopped

    assert sample(1000) == (False, False, False), "at the threshold: not yet"
    assert sample(1500) == (True, True, False)
    since = read_states(store, keys, ["q"])["q"].since
    assert sample(900) == (True, False, False), "between the marks: still shedding"
    state = read_states(store, keys, ["q"])["q"]
    assert (state.backlog, state.threshold, state.resume_below, state.since, state.by) == (900, 1000, 800, since, "w1")
    assert 0 < (store.ttl(state_key(keys, "q")) or 0) <= 5
    assert sample(799) == (False, False, True)
    assert read_states(store, keys, ["q"]) == {}
    assert sample(999) == (False, False, False), "between the marks: still not shedding"
    assert store.hgetall(keys.key("backlog"))["q"] == "999"


def test_a_corrupt_state_record_reads_as_not_shedding(store: Store) -> None:
    """Corrupt data is skipped: the queue does not shed until a sample says so."""
    keys = Keys("corrupt")
    store.set_json(state_key(keys, "q"), {"queue": "q", "backlog": "many"}, ttl_s=5)
    assert read_states(store, keys, ["q"]) == {}


def test_the_view_reads_the_store_at_most_once_per_period() -> None:
    """A process asks the store once per period however many tasks it runs."""
    now = [0.0]
    store, keys = MemoryStore(), Keys("view")
    view = ShedView(store, keys, ["q"], max_age_s=1.0, clock=lambda: now[0])
    for _ in range(100):
        assert view.get("q") is None
    assert view.reads == 1
    publish_sample(store, keys, {"q": 5000}, {"q": QueuePolicy("q", 1000, 800, 5, "park")}, ttl_s=5, sampler="w")
    assert view.get("q") is None, "not before the period ends"
    now[0] = 1.0
    assert view.get("q") is not None and view.reads == 2


# -- parking (contract) ---------------------------------------------------------------------------
def test_park_caps_the_list_and_counts(store: Store) -> None:
    """The oldest entries beyond the cap are dropped and counted as overflowed."""
    keys = Keys("park")
    outcomes = [park(store, keys, "q", json.dumps({"id": f"t{i}", "task": "x"}), cap=3) for i in range(5)]
    assert [o.length for o in outcomes] == [1, 2, 3, 3, 3]
    assert [o.overflowed for o in outcomes] == [0, 0, 0, 1, 1] and all(o.durable for o in outcomes)
    assert [p["id"] for p in peek(store, keys, "q", limit=10)] == ["t2", "t3", "t4"]
    assert store.hgetall(totals_key(keys)) == {"q:parked": "5", "q:overflowed": "2"}
    assert purge(store, keys, "q") == 3 and store.list_len(parked_key(keys, "q")) == 0
    assert store.hgetall(totals_key(keys))["q:purged"] == "3"


def test_replay_publishes_each_message_once_in_order_and_puts_back_what_failed(store: Store) -> None:
    """A failed publish puts the unpublished rest back at the head, in order; nothing is doubled."""
    app = Celery("replayunit", broker="memory://", set_as_current=False)
    keys = Keys("replay")
    for i in range(7):
        park(store, keys, "q", json.dumps({"id": f"t{i}", "task": "x", "queue": "q"}), cap=100)
    store_list = parked_key(keys, "q")
    published: list[str] = []

    def flaky(record: dict[str, Any], producer: Any) -> None:
        if record["id"] == "t3":
            raise ConnectionError("broker down")
        published.append(record["id"])

    report = replay(app, store, keys, "q", batch=2, publish=flaky)
    assert published == ["t0", "t1", "t2"] and report.replayed == 3 and report.put_back == 1
    assert report.error is not None and "broker down" in report.error
    assert [p["id"] for p in peek(store, keys, "q", limit=10)] == ["t3", "t4", "t5", "t6"]

    report = replay(app, store, keys, "q", limit=3, publish=lambda r, p: published.append(r["id"]))
    assert report.replayed == 3 and published[3:] == ["t3", "t4", "t5"]
    report = replay(app, store, keys, "q", publish=lambda r, p: published.append(r["id"]))
    assert published == [f"t{i}" for i in range(7)] and store.list_len(store_list) == 0
    assert store.hgetall(totals_key(keys))["q:replayed"] == "7"


# -- the guard ------------------------------------------------------------------------------------
def test_a_low_priority_message_on_a_shedding_queue_is_parked_with_a_warning_and_an_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis-style priority 9 is importance 0: parked with everything needed to publish it again. The backlog
    reported is the one at the decision: the sample minus this message, received since."""
    app, runtime, recorder = _app()
    _shedding(runtime, "bulk", backlog=2345)
    work = app.tasks["shedunit.work"]
    with caplog.at_level(logging.WARNING):
        assert _run(work, priority=9, args=({"a": [1, 2]},), headers={"trace": "abc"}) == SHED
    [record] = peek(runtime.store, runtime.keys, "bulk", limit=5)
    assert record["id"] == "id-1" and record["task"] == "shedunit.work" and record["queue"] == "bulk"
    assert record["args"] == [{"a": [1, 2]}] and record["kwargs"] == {} and record["priority"] == 9
    assert record["options"]["headers"] == {"trace": "abc", PRIORITY_HEADER: 9} and record["options"]["retries"] == 2
    assert record["options"]["root_id"] == "root" and record["importance"] == 0 and record["backlog"] == 2344
    [event] = recorder.events
    assert event.fields["task"] == "shedunit.work" and event.fields["task_id"] == "id-1"
    assert event.fields["queue"] == "bulk" and event.fields["backlog"] == 2344 and event.fields["threshold"] == 1000
    line = next(r for r in caplog.records if "supervision-shed" in r.getMessage())
    assert line.levelno == logging.WARNING
    for field in ("task=shedunit.work", "task_id=id-1", "queue=bulk", "backlog=2344", "threshold=1000"):
        assert field in line.getMessage()


@pytest.mark.parametrize("higher_first", [False, True], ids=["redis", "rabbitmq"])
def test_important_unmarked_replayed_and_direct_messages_run(higher_first: bool) -> None:
    """Only messages below the cut-off are shed; no importance, a replay or a direct call always runs. A priority
    no producer set (kombu stamps 0; a producer without the plugin) is no importance on either broker."""
    app, runtime, recorder = _app()
    _guard(runtime)._higher_first = higher_first
    _shedding(runtime, "bulk")
    work = app.tasks["shedunit.work"]
    low, high, five = (1, 8, 5) if higher_first else (8, 1, 4)  # importance 1, 8 and 5 on this broker
    assert _run(work, priority=high) == "ran"
    assert _run(work, priority=five) == "ran", "importance 5 is not below the cut-off 5"
    assert _run(work) == "ran", "no priority: never shed"
    assert _run(work, priority=0, headers={PRIORITY_HEADER: None}) == "ran", "send_task: kombu's 0, marked none"
    for delivered in (0, 9):
        assert _run(work, priority=delivered, marked=False) == "ran", "no producer marked it"
    assert _run(work, priority=low, headers={"prismatic_replayed": 1}) == "ran"
    assert _run(work, priority=low, queue="core") == "ran", "core does not shed"
    assert work() == "ran"
    assert recorder.events == [] and runtime.store.list_len(parked_key(runtime.keys, "bulk")) == 0
    assert _run(app.tasks["shedunit.minor"]) == SHED
    assert _run(work, priority=low) == SHED


def test_drop_mode_discards_and_counts() -> None:
    """Mode drop: the message is not kept anywhere; the drop is logged, emitted and counted."""
    app, runtime, recorder = _app(prismatic_shed_mode="drop")
    _shedding(runtime, "bulk")
    assert _run(app.tasks["shedunit.work"], priority=9) == SHED
    assert runtime.store.list_len(parked_key(runtime.keys, "bulk")) == 0
    assert runtime.store.hgetall(totals_key(runtime.keys)) == {"bulk:dropped": "1"}
    assert recorder.events[0].fields["mode"] == "drop"
    assert runtime.shedding.counts()["bulk"] == {"park": 0, "drop": 1}


def test_a_message_that_cannot_be_parked_safely_runs_instead() -> None:
    """Arguments that are not JSON, or a store answering from memory, mean: run it, lose nothing."""
    app, runtime, recorder = _app()
    _shedding(runtime, "bulk")
    assert _run(app.tasks["shedunit.work"], priority=9, args=(object(),)) == "ran"

    class Degraded(MemoryStore):
        degraded = True

    store = Degraded()
    app2, runtime2, _ = _app(store=store)
    _shedding(runtime2, "bulk")
    assert _run(app2.tasks["shedunit.work"], priority=9) == "ran"
    assert recorder.events == []


# -- decisions on the backlog of the moment --------------------------------------------------------
class FakeBroker:
    """A sampler probe over in-test backlogs (what LLEN or queue_declare would answer)."""

    def __init__(self, **backlogs: int) -> None:
        self.backlogs = backlogs

    def sample(self, queues: Any) -> dict[str, int]:
        return {q: self.backlogs.get(q, 0) for q in queues}

    def close(self) -> None:
        pass


def _sampler(runtime: Runtime, broker: FakeBroker, now: list[float]) -> Sampler:
    """The worker's sampler, on the test's clock, over ``broker``, feeding the guard of ``runtime``."""
    guard = _guard(runtime)
    return Sampler(runtime.app, runtime.store, runtime.keys, ["bulk"], guard.policies, name=f"w{id(runtime)}",
                   interval_s=runtime.settings.shed_interval_s, probe=broker, guard=guard,  # type: ignore[arg-type]
                   clock=lambda: now[0])


def _clocked(runtime: Runtime, now: list[float] | None = None) -> list[float]:
    """The guard's estimate on a clock the test moves (seconds)."""
    now = now or [100.0]
    _guard(runtime).backlogs.clock = lambda: now[0]
    return now


def test_receipts_since_the_last_read_bring_the_estimate_below_the_resume_mark() -> None:
    """Read 805, resume mark 800: five receipts later the estimate is 800 (still shed), then 799: the message
    runs, and so do the next ones."""
    app, runtime, recorder = _app()
    _clocked(runtime)
    _shedding(runtime, "bulk")
    _shedding(runtime, "bulk", backlog=805)  # still shedding: between the marks
    work = app.tasks["shedunit.work"]
    assert _run(work) == "ran", "an unmarked receipt counts too"
    assert [_run(work, priority=9, task_id=f"low{i}") for i in range(4)] == [SHED] * 4
    assert [e.fields["backlog"] for e in recorder.events] == [803, 802, 801, 800]
    assert [_run(work, priority=9, task_id=f"late{i}") for i in range(3)] == ["ran"] * 3


@pytest.mark.parametrize("mode", ["park", "drop"])
def test_nothing_is_shed_on_a_stale_read_or_without_one(mode: str) -> None:
    """The state still says shedding, but this worker's last read is older than 0.1 s (its sampler is stuck),
    or it has none: the message runs, in drop mode too."""
    app, runtime, recorder = _app(prismatic_shed_mode=mode)
    now = _clocked(runtime)
    _shedding(runtime, "bulk", backlog=5000)
    work = app.tasks["shedunit.work"]
    now[0] += 0.1
    assert _run(work, priority=9, task_id="fresh-enough") == SHED
    now[0] += 0.01
    assert _run(work, priority=9, task_id="stale") == "ran"
    _, runtime2, _ = _app(prismatic_shed_mode=mode)
    publish_sample(runtime2.store, runtime2.keys, {"bulk": 5000},
                   {"bulk": QueuePolicy("bulk", 1000, 800, 5, mode)}, ttl_s=60, sampler="another-worker")
    assert _run(runtime2.app.tasks["shedunit.work"], priority=9) == "ran", "no read of its own"
    assert len(recorder.events) == 1


def test_the_sampler_hands_each_read_and_state_change_to_the_guard_at_once() -> None:
    """The guard's view, read just before shedding started, does not wait out its period: the sampler that
    started shedding refreshes it, so the first low message after the sample is shed. While the queue sheds the
    sampler reads it every 20 ms without publishing, and publishes at once when a read is below the mark."""
    app, runtime, recorder = _app()
    now = _clocked(runtime)
    guard = _guard(runtime)
    broker = FakeBroker(bulk=5000)
    sampler = _sampler(runtime, broker, now)
    work = app.tasks["shedunit.work"]
    assert _run(work, priority=9, task_id="before") == "ran" and guard.view.current() == {}
    assert sampler.tick() == SHEDDING_PERIOD_S and sampler.published == 1
    assert _run(work, priority=9, task_id="after") == SHED
    broker.backlogs["bulk"] = 900
    now[0] += SHEDDING_PERIOD_S
    assert sampler.tick() == SHEDDING_PERIOD_S and (sampler.samples, sampler.published) == (2, 1)
    assert guard.backlogs.estimate("bulk") == 900
    broker.backlogs["bulk"] = 700
    now[0] += SHEDDING_PERIOD_S
    assert sampler.tick() is None and sampler.published == 2 and guard.view.current() == {}
    assert _run(work, priority=9, task_id="below") == "ran" and len(recorder.events) == 1


def test_a_shedding_queue_that_stays_above_its_resume_mark_is_published_once_per_third_of_its_ttl() -> None:
    """While the backlog stays above the resume mark no sample can move the state: the sampler publishes only to
    refresh it (a third of its TTL), not every period; the first sample below the mark publishes at once."""
    _, runtime, _ = _app()
    now = _clocked(runtime)
    broker = FakeBroker(bulk=5000)
    sampler = _sampler(runtime, broker, now)
    sampler.sample()
    assert sampler.published == 1 and sampler._shedding == {"bulk"}
    assert (sampler.interval_s, sampler.ttl_s) == (1.0, 5.0), "the defaults"
    for _ in range(12):
        now[0] += sampler.interval_s
        sampler.sample()
    assert sampler.samples == 13 and sampler.published == 7, "every second period (2 s > 5 s / 3)"
    published = sampler.published
    broker.backlogs["bulk"] = 700
    now[0] += sampler.interval_s
    assert sampler.sample() and sampler.published == published + 1 and not sampler._shedding


def test_a_shedding_queue_with_no_candidate_is_read_once_per_period_until_one_arrives() -> None:
    """Reading a shedding queue every 20 ms only helps messages it could shed: after a period with none the
    sampler reads it once per period; the first candidate then finds no fresh read, runs, and wakes the sampler,
    which follows the queue closely again, so the next candidate is shed."""
    app, runtime, recorder = _app()
    now = _clocked(runtime)
    guard = _guard(runtime)
    woken: list[float] = []
    guard.wake = lambda: woken.append(now[0])
    broker = FakeBroker(bulk=5000)
    sampler = _sampler(runtime, broker, now)
    work = app.tasks["shedunit.work"]
    assert sampler.tick() == SHEDDING_PERIOD_S, "it started shedding: followed closely"
    now[0] += sampler.interval_s / 2
    assert _run(work, task_id="unmarked") == "ran", "no producer priority: never a candidate"
    assert sampler.tick() == SHEDDING_PERIOD_S, "still within a period of the start"
    now[0] += sampler.interval_s
    assert sampler.tick() is None, "a period without a candidate: one read per period"
    now[0] += 0.2
    assert _run(work, priority=9, task_id="first") == "ran" and woken == [now[0]], "no fresh read: it runs"
    assert sampler.tick() == SHEDDING_PERIOD_S, "woken by a candidate: followed closely again"
    assert _run(work, priority=9, task_id="next") == SHED
    assert len(recorder.events) == 1


def _drain(workers: list[tuple[Runtime, Sampler]], now: list[float], broker: FakeBroker) -> list[tuple[int, str]]:
    """1,500 queued messages (a third low, a third unmarked, a third high), one received every millisecond by
    each worker in turn; each worker's sampler ticks when its Ticker would. The backlog when each shed message
    was received, and its kind."""
    due = [now[0]] * len(workers)
    shed_at: list[tuple[int, str]] = []
    for i in range(1500):
        for w, (_, sampler) in enumerate(workers):
            if now[0] >= due[w]:
                due[w] = now[0] + (sampler.tick() or sampler.interval_s)
        runtime = workers[i % len(workers)][0]
        broker.backlogs["bulk"] -= 1  # received: no longer in the broker
        kind = ("low", "unmarked", "high")[i % 3]
        headers = {"prismatic_importance": {"low": 0, "high": 9}[kind]} if kind != "unmarked" else None
        if _run(runtime.app.tasks["shedunit.work"], headers=headers, task_id=f"m{i}") == SHED:
            shed_at.append((broker.backlogs["bulk"], kind))
        now[0] += 0.001
    return shed_at


@pytest.mark.parametrize("mode", ["park", "drop"])
def test_a_single_worker_draining_through_the_resume_mark_sheds_nothing_below_it(mode: str) -> None:
    """Low messages are shed from the first sample until the backlog is below 800, and not one after; unmarked
    and high ones never are."""
    _, runtime, recorder = _app(prismatic_shed_mode=mode)
    now = _clocked(runtime)
    broker = FakeBroker(bulk=1500)
    shed_at = _drain([(runtime, _sampler(runtime, broker, now))], now, broker)
    assert {kind for _, kind in shed_at} == {"low"}
    assert min(backlog for backlog, _ in shed_at) >= 800, "nothing shed once the backlog was below the mark"
    assert len(shed_at) == len([i for i in range(700) if i % 3 == 0]), "every low message above it was"
    assert len(recorder.events) == len(shed_at) and {e.fields["mode"] for e in recorder.events} == {mode}


def test_with_two_workers_at_most_what_the_other_takes_in_one_read_period_is_shed_below_the_mark() -> None:
    """Two workers share the queue and the store: each subtracts only its own receipts, so after the crossing
    the other worker's share of one 20 ms read period can still be shed (10 messages here, a third of them
    low), and nothing later."""
    store = MemoryStore()
    now = [100.0]
    broker = FakeBroker(bulk=1500)
    workers = []
    for _ in range(2):
        _, runtime, _ = _app(store=store)
        _clocked(runtime, now)
        workers.append((runtime, _sampler(runtime, broker, now)))
    shed_at = _drain(workers, now, broker)
    below = [backlog for backlog, _ in shed_at if backlog < 800]
    assert {kind for _, kind in shed_at} == {"low"} and len(shed_at) > 200
    assert len(below) <= 4 and min(below, default=800) >= 800 - 20, below


def test_shedding_can_be_switched_off() -> None:
    """prismatic_shed_enabled=False: no shedding guard at all."""
    _, runtime, _ = _app(prismatic_shed_enabled=False)
    assert shed_guard(runtime) is None


@pytest.fixture
def celery_app_redis(redis_url: str) -> Iterator[Celery]:
    app = Celery("shedpub", broker=redis_url, set_as_current=False)
    yield app


def test_republish_keeps_id_queue_priority_and_headers_and_marks_the_replay(
    celery_app_redis: Celery, redis_url: str
) -> None:
    """The replayed message is the parked one, plus the prismatic_replayed header."""
    import redis as redis_lib

    from prismatic_celery.admission.shedding import republish

    record = {"id": "abc", "task": "shedpub.t", "queue": "q9", "priority": 9, "args": [1], "kwargs": {"k": 2},
              "options": {"headers": {"trace": "x"}, "retries": 3, "root_id": "r", "eta": "2030-01-01"}}
    republish(celery_app_redis, record)
    client = redis_lib.Redis.from_url(redis_url)
    raw = client.lrange(b"q9\x06\x169", 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    headers = message["headers"]
    assert headers["id"] == "abc" and headers["task"] == "shedpub.t" and headers["retries"] == 3
    assert headers["trace"] == "x" and headers["prismatic_replayed"] == 1 and headers["eta"] is None
    assert message["properties"]["priority"] == 9
