"""Prometheus metrics read from the store at scrape time (a custom collector, no per-task cost).

Flower exports only its own process's registry, and workers' counters live in
Redis, so the collector reads the store when scraped (one
:func:`~prismatic_celery.observability.health.get_tree_health` per scrape). The
collector is given how to find what it reads (a callable returning the app's
sources, None when supervision is off); :mod:`prismatic_celery.observability.flower.metrics`
binds it to a Celery app. Use it:

* in Flower: ``celery -A proj flower --conf=$(celery -A proj supervision flowerconfig)``
  registers it on Flower's own ``/metrics`` (see :mod:`prismatic_celery.observability.flower`);
* standalone: ``celery -A proj supervision exporter --port 9808`` (binds 127.0.0.1
  unless ``--address`` says otherwise);
* in your own process: ``prismatic_celery.observability.flower.metrics.register(app)`` on the
  default registry.

Every metric has the label ``namespace`` (``prismatic_namespace``).

| Metric | Type | Labels | Meaning |
|---|---|---|---|
| ``prismatic_store_up`` | gauge | | 1 when the store answered the scrape's ping |
| ``prismatic_health_score`` | gauge | | health score 0-100 (formula: ``observability/score.py``); no sample while |
| | | | the store does not answer (``prismatic_health_state{state="unknown"} 1`` then) |
| ``prismatic_health_state`` | gauge | ``state`` | 1 for the current state (healthy, degraded, critical, escalated) |
| ``prismatic_restarts_total`` | counter | ``domain``, ``child`` | restarts of a child since the store was created |
| ``prismatic_restarts_in_window`` | gauge | ``domain``, ``child`` | restarts within the hotspot window |
| ``prismatic_hotspot`` | gauge | ``domain``, ``child`` | 1 when the child is a hotspot |
| ``prismatic_hotspots`` | gauge | | number of hotspots |
| ``prismatic_child_paused`` | gauge | ``domain``, ``child`` | 1 while the child's queue is paused |
| ``prismatic_paused_children`` | gauge | ``reason`` | paused children by pause reason |
| ``prismatic_domain_escalated`` | gauge | ``domain`` | 1 while the domain is escalated |
| ``prismatic_domain_cooldown`` | gauge | ``domain`` | 1 while the domain is paused for a cool-down |
| ``prismatic_escalated_domains`` | gauge | | number of escalated domains |
| ``prismatic_circuit_state`` | gauge | ``circuit``, ``state`` | 1 for the current state (closed, open, half-open) |
| ``prismatic_circuit_failures`` | gauge | ``circuit`` | the circuit's failure counter |
| ``prismatic_workers`` | gauge | | registered workers |
| ``prismatic_processes`` | gauge | | main and pool processes of the workers that published a sample |
| ``prismatic_domain_memory_rss_bytes`` | gauge | ``domain`` | RSS of the pool processes serving the domain |
| ``prismatic_shed_total`` | counter | ``queue``, ``mode`` | messages shed (when load shedding reports counts) |
| ``prismatic_lessons`` | gauge | | lessons recorded (when lessons are enabled) |
| ``prismatic_knowledge_<counter>_total`` | counter | | one per counter of ``KNOWLEDGE_COUNTERS`` (below) |
| ``prismatic_knowledge_remediations_total`` | counter | ``action`` | remediations applied by action |
| ``prismatic_knowledge_recoveries_total`` | counter | ``action`` | successful re-runs, by remediation |
| ``prismatic_knowledge_auto_remediated_percent`` | gauge | | auto-remediated % of known-pattern crashes |
| ``prismatic_knowledge_mean_time_to_recovery_seconds`` | gauge | | auto-remediated crash to re-run success |
| ``prismatic_knowledge_escalation_rate`` | gauge | | escalations per crash (0..1) |
| ``prismatic_knowledge_false_positive_rate`` | gauge | | remediations followed by a final failure, per remediation |
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _make_wsgi_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..log import get_logger, log_event
from ..supervision.pauses import REASONS
from .health import get_tree_health
from .sources import HealthSources

__all__ = ["SupervisionCollector", "exporter_server", "families_from_health"]

logger = get_logger("prometheus")

STATES = ("healthy", "degraded", "critical", "escalated", "unknown")
CIRCUIT_STATES = ("closed", "open", "half-open")
#: Knowledge counters, each exported as ``prismatic_knowledge_<name>_total``.
KNOWLEDGE_COUNTERS = ("crashes", "known_pattern_crashes", "recurring_crashes", "auto_remediated",
                      "remediations_applied", "recoveries", "escalations", "failed_for_good", "false_positives")
KNOWLEDGE_GAUGES = {
    "auto_remediated_pct": ("auto_remediated_percent", "Auto-remediated known-pattern crashes, in percent."),
    "mean_time_to_recovery_s": ("mean_time_to_recovery_seconds",
                                "Mean seconds from an auto-remediated crash to its re-run's success."),
    "escalation_rate": ("escalation_rate", "Escalations per crash (0..1)."),
    "false_positive_rate": ("false_positive_rate", "Remediations followed by a final failure, per remediation."),
}


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"prismatic_{name}", doc, labels=["namespace", *labels])


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"prismatic_{name}", doc, labels=["namespace", *labels])


def families_from_health(health: Mapping[str, Any], *, store_up: bool = True) -> list[Metric]:
    """The metric families for one :func:`get_tree_health` report (a pure function)."""
    ns = str(health["namespace"])
    out: list[Metric] = []
    up = _gauge("store_up", "1 when the supervision store answered.")
    up.add_metric([ns], 1.0 if store_up else 0.0)
    state = _gauge("health_state", "1 for the tree's current health state.", ["state"])
    for name in STATES:
        state.add_metric([ns, name], 1.0 if health["state"] == name else 0.0)
    if health["state"] == "unknown":  # the store did not answer: no score and no count is claimed
        return [up, state]
    score = _gauge("health_score", "Health score of the supervision tree, 0-100.")
    score.add_metric([ns], float(health["score"]))
    out += [up, score, state]

    restarts = _counter("restarts", "Restarts of a child since the store was created.", ["domain", "child"])
    window = _gauge("restarts_in_window", "Restarts of a child within the hotspot window.", ["domain", "child"])
    hotspot = _gauge("hotspot", "1 when the child restarts more than the hotspot threshold.", ["domain", "child"])
    paused = _gauge("child_paused", "1 while the child's queue is paused.", ["domain", "child"])
    escalated = _gauge("domain_escalated", "1 while the domain is escalated to operators.", ["domain"])
    cooldown = _gauge("domain_cooldown", "1 while the domain is paused for a cool-down.", ["domain"])
    memory = _gauge("domain_memory_rss_bytes", "RSS of the pool processes that served the domain.", ["domain"])
    by_reason = dict.fromkeys(REASONS, 0)
    for domain in health["domains"]:
        name = str(domain["name"])
        escalated.add_metric([ns, name], 1.0 if domain["escalated"] else 0.0)
        cooldown.add_metric([ns, name], 1.0 if domain.get("cooldown") else 0.0)
        if domain.get("memory_rss_bytes") is not None:
            memory.add_metric([ns, name], float(domain["memory_rss_bytes"]))
        for child in domain["children"]:
            labels = [ns, name, str(child["queue"])]
            restarts.add_metric(labels, float(child["restarts_total"]))
            window.add_metric(labels, float(child["restarts_in_window"]))
            hotspot.add_metric(labels, 1.0 if child["hotspot"] else 0.0)
            paused.add_metric(labels, 1.0 if child["paused"] else 0.0)
            if child["paused"]:
                reason = str(child["pause"]["reason"])
                by_reason[reason] = by_reason.get(reason, 0) + 1
    paused_by_reason = _gauge("paused_children", "Paused children by pause reason.", ["reason"])
    for reason, count in sorted(by_reason.items()):
        paused_by_reason.add_metric([ns, reason], float(count))
    hotspots = _gauge("hotspots", "Children restarting more than the hotspot threshold.")
    hotspots.add_metric([ns], float(len(health["hotspots"])))
    escalations = _gauge("escalated_domains", "Domains escalated to operators.")
    escalations.add_metric([ns], float(len(health["escalations"])))
    out += [restarts, window, hotspot, hotspots, paused, paused_by_reason, escalated, cooldown, escalations, memory]

    circuit_state = _gauge("circuit_state", "1 for the circuit's current state.", ["circuit", "state"])
    failures = _gauge("circuit_failures", "The circuit's failure counter.", ["circuit"])
    for name, circuit in sorted(health["circuits"].items()):
        for value in CIRCUIT_STATES:
            circuit_state.add_metric([ns, name, value], 1.0 if circuit["state"] == value else 0.0)
        failures.add_metric([ns, name], float(circuit["fail_counter"]))
    workers = _gauge("workers", "Registered workers.")
    workers.add_metric([ns], float(len(health["workers"])))
    out += [circuit_state, failures, workers]
    if health.get("total_processes") is not None:
        processes = _gauge("processes", "Main and pool processes of the workers that published a sample.")
        processes.add_metric([ns], float(health["total_processes"]))
        out.append(processes)

    shed = health.get("shed")
    if shed is not None:
        shed_total = _counter("shed", "Messages shed under load.", ["queue", "mode"])
        for queue, modes in sorted(shed["queues"].items()):
            for mode, count in sorted(modes.items()):
                shed_total.add_metric([ns, queue, mode], float(count))
        out.append(shed_total)
    knowledge = health.get("knowledge")
    if knowledge is not None:
        out += _knowledge_families(ns, knowledge)
    return out


def _number(value: object) -> float:
    """A metric's value: a number (or a number's text); 0 for None."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float, str)):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def _by_action(value: object) -> list[tuple[str, float]]:
    """``{action: count}`` (absent: empty), sorted by action."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise TypeError(f"not an object: {value!r}")
    return sorted((str(action), _number(count)) for action, count in value.items())


def _knowledge_families(ns: str, knowledge: Mapping[str, object]) -> list[Metric]:
    out: list[Metric] = []
    lessons = _gauge("lessons", "Lessons recorded.")
    lessons.add_metric([ns], _number(knowledge.get("total_lessons") or 0))
    out.append(lessons)
    for name in KNOWLEDGE_COUNTERS:
        counter = _counter(f"knowledge_{name}", f"Knowledge counter {name}.")
        counter.add_metric([ns], _number(knowledge.get(name) or 0))
        out.append(counter)
    by_action = _counter("knowledge_remediations", "Remediations applied, by action.", ["action"])
    for action, count in _by_action(knowledge.get("remediations_by_action") or {}):
        by_action.add_metric([ns, action], count)
    out.append(by_action)
    recovered = _counter("knowledge_recoveries", "Re-runs that succeeded, by the remediation that gave them.",
                         ["action"])
    for action, count in _by_action(knowledge.get("recoveries_by_action") or {}):
        recovered.add_metric([ns, action], count)
    out.append(recovered)
    for key, (name, doc) in KNOWLEDGE_GAUGES.items():
        value = knowledge.get(key)
        if value is not None:
            family = _gauge(f"knowledge_{name}", doc)
            family.add_metric([ns], _number(value))
            out.append(family)
    return out


class SupervisionCollector(Collector):
    """Reads the supervision state of one app from its store at every scrape (``resolve``: the app's sources,
    None while supervision is off; it may raise, as for invalid settings)."""

    def __init__(self, resolve: Callable[[], HealthSources | None]) -> None:
        self._resolve = resolve
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the tree and are read at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families now (a failed read yields ``prismatic_store_up 0`` only, never an error)."""
        try:
            sources = self._resolve()
            if sources is None:
                return
            with self._lock:  # one read at a time per app, however many scrapers
                health = get_tree_health(sources)
            yield from families_from_health(health, store_up=health["state"] != "unknown")
        except Exception as exc:  # a scrape must not fail because supervision state is unreadable
            log_event(logging.WARNING, "metrics-unavailable", logger, error=repr(exc)[:300])
            fallback = GaugeMetricFamily("prismatic_store_up", "1 when the supervision store answered.")
            fallback.add_metric([], 0.0)
            yield fallback


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged."""


def exporter_server(collector: Collector, *, port: int = 9808, address: str = "127.0.0.1") -> WSGIServer:
    """An HTTP server exporting only ``collector``'s metrics on ``address:port`` (call ``serve_forever``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return _make_wsgi_server(address, port, make_wsgi_app(registry), handler_class=_QuietHandler)
