"""Tree health: the documented score formula, and get_tree_health read from the store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.circuits import Circuits
from prismatic_celery.observability.event_fields import EVENT_FIELDS, event_fields_table
from prismatic_celery.observability.events import EVENT_TYPES
from prismatic_celery.observability.health import get_tree_health, summary_numbers
from prismatic_celery.observability.sampler import rss_bytes, sample_worker
from prismatic_celery.observability.samples import WorkerSample, sample_key_for
from prismatic_celery.observability.score import PENALTIES, ScoreInputs, health_score
from prismatic_celery.observability.views import tree_state, workers_view
from prismatic_celery.observability.workers import registration_ttl_s
from prismatic_celery.runtime import Runtime
from prismatic_celery.store import MemoryStore, RedisStore
from prismatic_celery.supervision.pauses import Pause, set_pause
from prismatic_celery.testing import fail_child, serve
from tests.conftest import free_port

DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": ["storage", "cache", "telemetry"]},
    "osint": {"strategy": "one_for_one", "children": ["sources", "monitor"]},
}


def make_runtime(**conf: Any) -> Runtime:
    app = Celery("healthy", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_domains": DOMAINS, "prismatic_store_url": "memory://",
                     "prismatic_circuits": {"payments": {"fail_max": 4}}, **conf})
    prismatic_celery.install(app, store=MemoryStore())
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    return runtime


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """A runtime whose domains tolerate the few restarts a test makes (no cool-down in the way)."""
    yield make_runtime(prismatic_domain_budget={"max_restarts": 10, "period_s": 60})


def crash(runtime: Runtime, queue: str, member: str) -> None:
    """One failure of the child (a restart)."""
    fail_child(runtime, queue, member)


# -- the formula ----------------------------------------------------------------------------------


def test_a_quiet_tree_scores_100_and_is_healthy() -> None:
    """Nothing wrong: full score, no penalty."""
    score = health_score(ScoreInputs())
    assert (score.score, score.state, score.penalties) == (100, "healthy", ())


@pytest.mark.parametrize(("inputs", "expected"), [
    (ScoreInputs(open_circuits=1), 85),
    (ScoreInputs(half_open_circuits=2), 90),
    (ScoreInputs(hotspots=2), 80),
    (ScoreInputs(paused_children=3), 85),
    (ScoreInputs(cooldown_domains=1), 80),
    (ScoreInputs(escalated_domains=1), 60),
    (ScoreInputs(recent_restarts=7), 93),
    (ScoreInputs(open_circuits=1, hotspots=1, paused_children=2, recent_restarts=4), 61),
])
def test_each_condition_costs_its_documented_points(inputs: ScoreInputs, expected: int) -> None:
    """The score is 100 minus the documented points per condition."""
    assert health_score(inputs).score == expected


def test_recent_restarts_cost_at_most_20_points() -> None:
    """A burst of restarts alone cannot take more than its cap."""
    score = health_score(ScoreInputs(recent_restarts=500))
    assert score.score == 80
    assert [(p.reason, p.count, p.points) for p in score.penalties] == [("recent_restart", 500, 20)]


def test_the_score_never_goes_below_zero() -> None:
    """Penalties add up, the score is clamped at 0."""
    assert health_score(ScoreInputs(escalated_domains=2, open_circuits=3)).score == 0


def test_an_escalated_tree_is_escalated_whatever_its_score() -> None:
    """Escalation is a state of its own, even when the rest is fine."""
    score = health_score(ScoreInputs(escalated_domains=1))
    assert score.score == 60 and score.state == "escalated"


@pytest.mark.parametrize(("inputs", "state"), [
    (ScoreInputs(hotspots=2), "healthy"),            # 80
    (ScoreInputs(hotspots=2, recent_restarts=1), "degraded"),  # 79
    (ScoreInputs(hotspots=5), "degraded"),           # 50
    (ScoreInputs(hotspots=5, recent_restarts=1), "critical"),  # 49
])
def test_states_start_at_80_and_50(inputs: ScoreInputs, state: str) -> None:
    """healthy from 80, degraded from 50, critical below."""
    assert health_score(inputs).state == state


def test_every_penalty_is_documented_in_the_module_docstring() -> None:
    """The docstring's table lists each penalty's points."""
    from prismatic_celery.observability import score

    doc = score.__doc__ or ""
    for points in PENALTIES.values():
        assert f"| {points} |" in doc


# -- reading the store ------------------------------------------------------------------------------


def test_a_fresh_tree_reports_every_child_with_zero_restarts(runtime: Runtime) -> None:
    """Every declared child appears, running, with no restart; circuits closed; score 100."""
    serve(runtime)
    health = get_tree_health(runtime)
    assert health["scope"] == "cluster" and health["namespace"] == "healthy"
    assert [c["queue"] for d in health["domains"] for c in d["children"]] == \
        ["storage", "cache", "telemetry", "sources", "monitor"]
    assert health["restart_counts"]["storage"] == {"total": 0, "in_window": 0}
    assert health["circuits"]["payments"]["state"] == "closed"
    assert health["circuits"]["payments"]["fail_max"] == 4
    assert (health["score"], health["state"]) == (100, "healthy")
    assert [w["hostname"] for w in health["workers"]] == ["test@localhost"] and health["total_processes"] is None


def test_restarts_hotspots_pauses_and_circuits_are_read_from_the_store(runtime: Runtime) -> None:
    """Four restarts of sources make a hotspot; a storage crash pauses cache and telemetry; an open circuit."""
    serve(runtime)
    for i in range(4):
        crash(runtime, "sources", f"s{i}:0")
    crash(runtime, "storage", "x:0")
    runtime.circuits.open_for("payments", 60_000)
    health = get_tree_health(runtime)
    assert health["restart_counts"]["sources"] == {"total": 4, "in_window": 4}
    assert health["restarts_total"] == 5 and health["restarts_in_window"] == 5
    assert [(h["domain"], h["child"], h["restarts"]) for h in health["hotspots"]] == [("osint", "sources", 4)]
    assert sorted((p["child"], p["reason"], p["by"]) for p in health["paused"]) == \
        [("cache", "rest_for_one", "storage"), ("telemetry", "rest_for_one", "storage")]
    core = health["domains"][0]
    assert core["status"] == "paused" and core["restarts_total"] == 1
    assert health["circuits"]["payments"]["state"] == "open"
    # 100 - 15 (open circuit) - 10 (hotspot) - 2 * 5 (paused) - 5 (recent restarts)
    assert (health["score"], health["state"]) == (60, "degraded")
    assert summary_numbers(health)["paused"] == [("cache", "rest_for_one"), ("telemetry", "rest_for_one")]


def test_an_escalated_domain_is_reported_and_its_pauses_are_not_counted_twice(runtime: Runtime) -> None:
    """An escalation record makes the tree escalated; the domain's escalation pauses cost nothing more."""
    serve(runtime)
    now = runtime.store.time()
    runtime.store.set_json(runtime.keys.key("escalation", "osint"),
                           {"domain": "osint", "at": now, "by": "sources", "reason": "supervisor_budget_exceeded"},
                           ttl_s=60)
    for queue in ("sources", "monitor"):
        set_pause(runtime.store, runtime.keys, Pause(queue, "osint", "escalated", "sources", now, now + 60))
    health = get_tree_health(runtime)
    assert health["escalated"] is True
    assert health["escalations"] == [{"domain": "osint", "reason": "supervisor_budget_exceeded", "at": now,
                                      "by": "sources"}]
    assert health["domains"][1]["status"] == "escalated"
    assert (health["score"], health["state"]) == (60, "escalated")
    assert [p.reason for p in health_score(ScoreInputs(escalated_domains=1)).penalties] == ["escalated_domain"]


def test_a_domain_paused_for_its_cooldown_costs_20_points(runtime: Runtime) -> None:
    """Cool-down pauses make the domain's status cooldown (one penalty for the domain)."""
    serve(runtime)
    now = runtime.store.time()
    for queue in ("sources", "monitor"):
        set_pause(runtime.store, runtime.keys, Pause(queue, "osint", "cooldown", "sources", now, now + 60))
    health = get_tree_health(runtime)
    assert health["domains"][1]["status"] == "cooldown"
    assert [(p["reason"], p["points"]) for p in health["penalties"]] == [("cooldown_domain", 20)]


def test_a_circuit_opened_elsewhere_is_found_in_the_store(runtime: Runtime) -> None:
    """A circuit declared only in a worker (e.g. by a circuit_break remediation) is still reported."""
    from prismatic_celery.circuits import Circuits

    elsewhere = Circuits(runtime.store, runtime.keys, listen=False)
    elsewhere.declare("geo-api").open_for(30_000)
    health = get_tree_health(runtime)
    assert health["circuits"]["geo-api"]["state"] == "open"
    assert health["circuits"]["geo-api"]["declared"] is False


def test_worker_samples_add_up_to_cluster_processes_and_memory(runtime: Runtime) -> None:
    """Each registered worker's sample counts: processes summed, memory per domain summed."""
    store = runtime.store
    for host, pids, memory in (("a@h", [1, 2, 3], {"core": 100, "osint": None}), ("b@h", [7], {"core": 50})):
        serve(runtime, host, ["storage"], pid=pids[0], pool="prefork")
        sample = WorkerSample(host, pids[0], "prefork", tuple(pids), memory, 150, store.time())
        store.set_json(sample_key_for(runtime.keys, host), sample.to_json(), ttl_s=30)
    health = get_tree_health(runtime)
    assert [w["hostname"] for w in health["workers"]] == ["a@h", "b@h"]
    assert health["total_processes"] == 4
    assert health["domains"][0]["memory_rss_bytes"] == 150
    assert health["domains"][1]["memory_rss_bytes"] is None


def test_a_corrupt_worker_sample_is_skipped_with_a_warning(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed sample counts as no sample; the report still renders."""
    serve(runtime, "a@h", pid=1)
    runtime.store.set_json(sample_key_for(runtime.keys, "a@h"), {"hostname": "a@h", "pid": "not a pid"}, ttl_s=30)
    health = get_tree_health(runtime)
    assert health["workers"][0]["total_processes"] is None
    assert "health-sample-invalid" in caplog.text


def test_a_worker_samples_its_processes_and_the_memory_of_the_processes_serving_each_domain(runtime: Runtime) -> None:
    """Processes: main + pool; memory of a domain: RSS of the pool processes that served it."""
    me = os.getpid()
    consumer = SimpleNamespace(hostname="w@h", pool=SimpleNamespace(info={"processes": [me]}))
    served = {"core": {me, 999_999_999}}
    sample = sample_worker(runtime.supervisor, consumer, served=lambda: served)  # type: ignore[arg-type]
    assert sample.processes == (me,)
    assert sample.memory_per_domain["core"] == pytest.approx(rss_bytes(me), rel=0.05)  # a live process: RSS moves
    assert sample.memory_per_domain["osint"] is None, "no process served osint yet"
    local = get_tree_health(runtime, local=sample)
    assert local["scope"] == "worker" and local["hostname"] == "w@h"
    assert local["total_processes"] == 1
    assert local["domains"][0]["memory_rss_bytes"] == sample.memory_per_domain["core"]


def test_rss_of_this_process_is_known_and_of_a_missing_process_is_not() -> None:
    """RSS comes from /proc (or psutil)."""
    mine = rss_bytes(os.getpid())
    assert mine is not None and mine > 1_000_000
    assert rss_bytes(999_999_999) is None


def test_knowledge_lessons_and_shed_counts_are_none_when_absent_and_read_when_present(runtime: Runtime) -> None:
    """Optional pieces report None ("n/a"), and are read through their documented methods when present."""
    for name in ("learning", "shedding"):
        setattr(runtime, name, None)
    health = get_tree_health(runtime, lessons=5)
    assert health["knowledge"] is None and health["lessons"] is None and health["shed"] is None

    snapshot = SimpleNamespace(to_json=lambda: {"total_lessons": 2, "crashes": 5, "escalation_rate": 0.2})
    setattr(runtime, "learning", SimpleNamespace(  # a stand-in for the Learning piece
        metrics=SimpleNamespace(snapshot=lambda: snapshot),
        lessons=SimpleNamespace(all=lambda limit: [SimpleNamespace(to_json=lambda: {"fingerprint": "f"})])))
    runtime.shedding = SimpleNamespace(counts=lambda: {"cache": {"park": 3, "drop": 1}, "sources": 2})  # type: ignore[attr-defined]
    health = get_tree_health(runtime, lessons=5)
    assert health["knowledge"]["crashes"] == 5 and health["lessons_total"] == 2
    assert health["lessons"] == [{"fingerprint": "f"}]
    assert health["shed"] == {"queues": {"cache": {"park": 3, "drop": 1}, "sources": {"shed": 2}}, "total": 6}


def test_a_failing_optional_piece_reads_as_absent(runtime: Runtime) -> None:
    """An exception from an optional piece never breaks the report."""
    def boom() -> Any:
        raise RuntimeError("down")

    setattr(runtime, "learning", SimpleNamespace(metrics=SimpleNamespace(snapshot=boom)))
    runtime.shedding = SimpleNamespace(counts=boom)  # type: ignore[attr-defined]
    health = get_tree_health(runtime)
    assert health["knowledge"] is None and health["shed"] is None


def test_recent_events_are_newest_first(runtime: Runtime) -> None:
    """The event stream is read newest first, with its entry ids."""
    crash(runtime, "sources", "a:0")
    runtime.emit("resume", domain="osint", queues="sources", reason="operator")
    events = get_tree_health(runtime, events=10)["events"]
    assert [e["type"] for e in events] == ["resume", "restart"]
    assert all(e["id"] for e in events)


def test_every_event_type_has_documented_fields() -> None:
    """The field table covers each supervision event type, and renders as Markdown."""
    assert set(EVENT_FIELDS) == set(EVENT_TYPES)
    table = event_fields_table()
    for kind in EVENT_TYPES:
        assert f"`supervision-{kind.replace('_', '-')}`" in table


# -- what cannot be known, and who serves what ------------------------------------------------------
def test_with_the_store_unreachable_health_is_unknown_and_claims_nothing() -> None:
    """A store that does not answer: state unknown, no score, every child unknown, the password masked."""
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    app = Celery("dark", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_domains": DOMAINS, "prismatic_store_url": url})
    prismatic_celery.install(app, store=RedisStore(url, timeout_s=0.2))
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    health = get_tree_health(runtime, events=5, lessons=5)
    assert (health["state"], health["score"], health["escalated"]) == ("unknown", None, None)
    assert health["store"] == {"url": "redis://:***@" + url.split("@")[1], "shared": True, "reachable": False}
    assert {c["status"] for d in health["domains"] for c in d["children"]} == {"unknown"}
    assert health["penalties"] == [] and health["workers"] == [] and health["knowledge"] is None
    assert "s3cret" not in json.dumps(health, default=str)
    assert summary_numbers(health)["score"] is None


def test_a_child_no_live_worker_consumes_is_unserved_and_costs_10_points(runtime: Runtime) -> None:
    """Workers serve core's queues only: osint's two children are unserved (10 points each), its domain too."""
    serve(runtime, "core@h", ["storage", "cache", "telemetry"])
    health = get_tree_health(runtime)
    osint = next(d for d in health["domains"] if d["name"] == "osint")
    assert [c["served"] for c in osint["children"]] == [False, False] and osint["status"] == "unserved"
    assert [(p["reason"], p["count"], p["points"]) for p in health["penalties"]] == [("unserved_child", 2, 20)]
    assert (health["score"], health["state"]) == (80, "healthy")
    serve(runtime, "osint@h", ["sources", "monitor"])
    assert get_tree_health(runtime)["score"] == 100


def test_live_workers_and_circuits_come_from_indexes_never_a_scan() -> None:
    """A worker whose heartbeat is older than its registration TTL drops out of the views; a circuit another
    process declared is found through the circuits index; no view SCANs."""
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    app = Celery("index", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_domains": DOMAINS, "prismatic_store_url": "memory://"})
    prismatic_celery.install(app, store=store)
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None

    def no_scan(pattern: str) -> list[str]:
        raise AssertionError(f"SCAN {pattern}")

    serve(runtime, "a@h")
    Circuits(store, runtime.keys, listen=False).declare("geo-api").open_for(30_000)  # another process's circuit
    store.scan = no_scan  # type: ignore[method-assign]
    assert [w["hostname"] for w in workers_view(runtime)] == ["a@h"]
    assert get_tree_health(runtime)["circuits"]["geo-api"]["state"] == "open", "found through the index"
    now[0] += registration_ttl_s(runtime.settings) + 1
    assert workers_view(runtime) == [] and tree_state(runtime)["domains"][0]["status"] == "unserved"
