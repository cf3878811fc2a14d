"""Prometheus: the collector turns the store's supervision state into metrics at scrape time."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.observability.flower.metrics import collector_of, make_server, register
from prismatic_celery.observability.health import get_tree_health
from prismatic_celery.observability.prometheus import SupervisionCollector
from prismatic_celery.runtime import Runtime
from prismatic_celery.store import MemoryStore, RedisStore
from prismatic_celery.supervision.pauses import Pause, set_pause
from prismatic_celery.testing import serve
from tests.conftest import free_port

DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": ["storage", "cache", "telemetry"]},
    "osint": {"strategy": "one_for_one", "children": ["sources", "monitor"]},
}


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("promtest", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_store_url="memory://",
                    prismatic_circuits={"payments": {}, "geo": {}})
    prismatic_celery.install(app, store=MemoryStore())
    serve(runtime_of(app))
    yield app


def runtime_of(app: Celery) -> Runtime:
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    return runtime


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels without namespace): value}``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "namespace"))
            found[(sample.name, labels)] = sample.value
    return found


def scrape(app: Celery) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector_of(app))
    return samples(generate_latest(registry).decode())


def test_a_quiet_tree_exports_score_100_and_zeros(app: Celery) -> None:
    """Every child and circuit has a series from the start (no gaps in dashboards)."""
    got = scrape(app)
    assert got[("prismatic_store_up", ())] == 1.0
    assert got[("prismatic_health_score", ())] == 100.0
    assert got[("prismatic_health_state", (("state", "healthy"),))] == 1.0
    assert got[("prismatic_restarts_total", (("child", "storage"), ("domain", "core")))] == 0.0
    assert got[("prismatic_child_paused", (("child", "monitor"), ("domain", "osint")))] == 0.0
    assert got[("prismatic_circuit_state", (("circuit", "geo"), ("state", "closed")))] == 1.0
    assert got[("prismatic_workers", ())] == 1.0
    assert ("prismatic_processes", ()) not in got, "unknown, not zero"


def test_with_the_store_unreachable_no_score_is_exported() -> None:
    """store_up 0 and health_state unknown; no score sample and no per-child series that would claim zeros."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    dark = Celery("dark", broker="memory://", set_as_current=False)
    dark.conf.update(prismatic_domains=DOMAINS, prismatic_store_url=url)
    prismatic_celery.install(dark, store=RedisStore(url, timeout_s=0.2))
    got = scrape(dark)
    assert got[("prismatic_store_up", ())] == 0.0
    assert got[("prismatic_health_state", (("state", "unknown"),))] == 1.0
    assert got[("prismatic_health_state", (("state", "healthy"),))] == 0.0
    assert not [name for name, _ in got if name in ("prismatic_health_score", "prismatic_restarts_total",
                                                     "prismatic_child_paused", "prismatic_workers")]


def test_metrics_carry_restarts_hotspots_circuits_pauses_and_escalations(app: Celery) -> None:
    """The same numbers as get_tree_health."""
    runtime = runtime_of(app)
    store, keys = runtime.store, runtime.keys
    now = store.time()
    for i in range(5):
        store.window_add(keys.key("restarts", "sources"), f"m{i}", now, 300, cap=100)
    store.hincr(keys.key("restart-totals"), {"sources": 7})
    runtime.circuits.open_for("payments", 60_000)
    set_pause(store, keys, Pause("telemetry", "core", "manual", "op", now, now + 60))
    store.set_json(keys.key("escalation", "osint"), {"domain": "osint", "reason": "supervisor_budget_exceeded"})
    health = get_tree_health(runtime)
    got = scrape(app)
    child = (("child", "sources"), ("domain", "osint"))
    assert got[("prismatic_restarts_total", child)] == 7.0
    assert got[("prismatic_restarts_in_window", child)] == 5.0
    assert got[("prismatic_hotspot", child)] == 1.0 and got[("prismatic_hotspots", ())] == 1.0
    assert got[("prismatic_circuit_state", (("circuit", "payments"), ("state", "open")))] == 1.0
    assert got[("prismatic_circuit_state", (("circuit", "payments"), ("state", "closed")))] == 0.0
    assert got[("prismatic_child_paused", (("child", "telemetry"), ("domain", "core")))] == 1.0
    assert got[("prismatic_paused_children", (("reason", "manual"),))] == 1.0
    assert got[("prismatic_domain_escalated", (("domain", "osint"),))] == 1.0
    assert got[("prismatic_escalated_domains", ())] == 1.0
    assert got[("prismatic_health_score", ())] == float(health["score"])
    assert got[("prismatic_health_state", (("state", "escalated"),))] == 1.0


def test_shed_counts_and_knowledge_metrics_are_exported_when_available(app: Celery) -> None:
    """Optional pieces add their families; rates absent until observed."""
    runtime = runtime_of(app)
    runtime.shedding = SimpleNamespace(counts=lambda: {"cache": {"park": 4, "drop": 0}})  # type: ignore[attr-defined]
    metrics = {"total_lessons": 3, "crashes": 10, "known_pattern_crashes": 4, "auto_remediated": 2,
               "remediations_applied": 6, "remediations_by_action": {"retry_with_backoff": 6}, "recoveries": 2,
               "escalations": 1, "failed_for_good": 1, "false_positives": 1, "auto_remediated_pct": 50.0,
               "mean_time_to_recovery_s": 1.25, "escalation_rate": 0.1, "false_positive_rate": None}
    setattr(runtime, "learning", SimpleNamespace(  # a stand-in for the Learning piece
        metrics=SimpleNamespace(snapshot=lambda: SimpleNamespace(to_json=lambda: metrics))))
    got = scrape(app)
    assert got[("prismatic_shed_total", (("mode", "park"), ("queue", "cache")))] == 4.0
    assert got[("prismatic_lessons", ())] == 3.0
    assert got[("prismatic_knowledge_crashes_total", ())] == 10.0
    assert got[("prismatic_knowledge_remediations_total", (("action", "retry_with_backoff"),))] == 6.0
    assert got[("prismatic_knowledge_auto_remediated_percent", ())] == 50.0
    assert got[("prismatic_knowledge_mean_time_to_recovery_seconds", ())] == 1.25
    assert ("prismatic_knowledge_false_positive_rate", ()) not in got


def test_without_the_optional_pieces_their_metrics_are_absent(app: Celery) -> None:
    """n/a is no series, not a zero."""
    runtime = runtime_of(app)
    for name in ("learning", "shedding"):
        setattr(runtime, name, None)
    names = {name for name, _ in scrape(app)}
    assert not {n for n in names if n.startswith(("prismatic_knowledge", "prismatic_shed", "prismatic_lessons"))}


def test_a_failing_read_exports_store_up_0_instead_of_failing_the_scrape() -> None:
    """The scrape still answers."""
    def broken() -> Any:
        raise RuntimeError("no store")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisionCollector(broken))
    assert samples(generate_latest(registry).decode()) == {("prismatic_store_up", ()): 0.0}


def test_register_is_idempotent_per_registry_and_namespace(app: Celery) -> None:
    """Flower may execute its config more than once; series are never duplicated."""
    registry = CollectorRegistry(auto_describe=False)
    assert register(app, registry) is register(app, registry)
    assert generate_latest(registry).decode().count("prismatic_health_score{") == 1


def test_the_standalone_exporter_serves_metrics_on_127_0_0_1(app: Celery) -> None:
    """make_server binds 127.0.0.1 by default and answers /metrics."""
    server = make_server(app, port=0)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        local_only = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        with local_only.open(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert samples(text)[("prismatic_health_score", ())] == 100.0
