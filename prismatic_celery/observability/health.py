"""Tree health: the supervision introspector's ``get_tree_health()``, per worker and cluster-wide.

The report adds up the views (:mod:`.views`) and scores them (:mod:`.score`, whose docstring has the
formula); when the store does not answer it is :func:`~.unknown.unknown_health`. What is read
(``<ns>`` is ``prismatic_namespace``):

| Key | Read for |
|---|---|
| ``prismatic:{<ns>}:pause:<queue>:<cause>`` | paused children (one MGET) |
| ``prismatic:{<ns>}:restart-totals`` | restarts per child since the start (HGETALL) |
| ``prismatic:{<ns>}:restarts:<queue>`` | restarts per child in the hotspot window (ZCOUNT each) |
| ``prismatic:{<ns>}:escalation:<domain>`` | escalated domains (one MGET) |
| ``prismatic:{<ns>}:circuits`` | the circuits any process declared (the index, never a SCAN) |
| ``prismatic:{<ns>}:circuit:<name>`` | circuit states |
| ``prismatic:{<ns>}:workers`` | live workers: the index of heartbeats (ZRANGEBYSCORE), then their registrations |
| ``prismatic:{<ns>}:worker:<hostname>`` | each live worker's queues, pool and pid (one MGET) |
| ``prismatic:{<ns>}:health:<hostname>`` | each worker's processes and memory, published by the worker |
| ``prismatic:{<ns>}:events`` | recent supervision events (XREVRANGE) |

Lessons, knowledge metrics and shed counts come from the runtime's ``learning`` and ``shedding``
when it has them (else they are reported as None, shown "n/a").

Processes and memory (:mod:`.samples`): each worker's ``HealthSamplerStep`` runs a
:class:`~.sampler.HealthSampler`, which samples its main and pool processes and publishes the sample every
``max(5 s, prismatic_reconcile_interval_s)`` to ``prismatic:{<ns>}:health:<hostname>`` (JSON, expiring) so
the cluster view can add them up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..log import get_logger
from .sampler import sum_known as _sum
from .samples import WorkerSample
from .score import ScoreInputs, health_score
from .sources import HealthSources
from .unknown import local_fields, unknown_health
from .views import circuits_view, knowledge_view, lessons_view, recent_events, tree_state, workers_view
from .workers import live_registrations

__all__ = ["get_tree_health", "summary_numbers"]

logger = get_logger("health")

# -- the cluster-wide report ----------------------------------------------------------------------


def get_tree_health(
    sources: HealthSources,
    *,
    local: WorkerSample | None = None,
    now: float | None = None,
    events: int = 0,
    lessons: int = 0,
) -> dict[str, Any]:
    """The tree's health, JSON-ready: cluster-wide, or for one worker when ``local`` is its sample.

    Keys: ``scope`` (``cluster``/``worker``), ``namespace``, ``at`` (store clock, s), ``score``,
    ``state``, ``penalties``, ``domains`` (each with its children's restarts, pauses and
    hotspot flags, its escalation and memory), ``restart_counts`` (``{queue: {total,
    in_window}}``), ``restarts_total``, ``restarts_in_window``, ``hotspots``, ``circuits``,
    ``paused``, ``escalations``, ``total_processes``, ``workers``, ``shed``, ``knowledge``,
    ``lessons_total``; with ``local``: ``hostname``, ``pid``, ``pool``, ``processes``; with
    ``events`` / ``lessons`` > 0: the newest events and lessons too.
    """
    if not sources.store.ping():
        return unknown_health(sources, local=local)
    registrations = live_registrations(sources.store, sources.keys, sources.settings)
    state = tree_state(sources, now=now, registrations=registrations)
    at = float(state["at"])
    circuits = circuits_view(sources)
    workers = workers_view(sources, registrations)
    samples: list[tuple[Mapping[str, int | None], int | None]]  # memory per domain, processes
    if local is not None:
        samples = [(local.memory_per_domain, len(local.processes))]
    else:
        samples = [(w["memory_per_domain"], w["total_processes"]) for w in workers if w["total_processes"] is not None]
    domains = []
    hotspots, paused, escalations = [], [], []
    restart_counts: dict[str, dict[str, int]] = {}
    for domain in state["domains"]:
        name = domain["name"]
        memory = [memory_per_domain.get(name) for memory_per_domain, _ in samples]
        domain["memory_rss_bytes"] = _sum(memory)
        for child in domain["children"]:
            queue = child["queue"]
            restart_counts[queue] = {"total": child["restarts_total"], "in_window": child["restarts_in_window"]}
            if child["hotspot"]:
                hotspots.append({"domain": name, "child": queue, "restarts": child["restarts_in_window"],
                                 "window_s": sources.settings.hotspot_window_s})
            if child["paused"]:
                paused.append({"domain": name, "child": queue, **child["pause"]})
        if domain["escalated"]:
            record = domain["escalation"] or {}
            escalations.append({"domain": name, "reason": record.get("reason"), "at": record.get("at"),
                                "by": record.get("by")})
        domains.append(domain)
    escalated = {d["name"] for d in domains if d["escalated"]}
    cooldown = {d["name"] for d in domains if d["cooldown"]}
    inputs = ScoreInputs(
        escalated_domains=len(escalated),
        cooldown_domains=len(cooldown),
        open_circuits=sum(1 for c in circuits.values() if c["state"] == "open"),
        half_open_circuits=sum(1 for c in circuits.values() if c["state"] == "half-open"),
        hotspots=len(hotspots),
        paused_children=sum(1 for p in paused if p["domain"] not in escalated | cooldown),
        unserved_children=sum(1 for d in domains for c in d["children"] if not c["served"]),
        recent_restarts=sum(c["in_window"] for c in restart_counts.values()),
    )
    score = health_score(inputs)
    knowledge = knowledge_view(sources)
    result = {
        "scope": "cluster" if local is None else "worker",
        "namespace": sources.keys.namespace,
        "at": at,
        "score": score.score,
        "state": score.state,
        "penalties": [p.to_json() for p in score.penalties],
        "domains": domains,
        "budget": state["budget"],
        "restart_counts": restart_counts,
        "restarts_total": sum(c["total"] for c in restart_counts.values()),
        "restarts_in_window": inputs.recent_restarts,
        "hotspot_threshold": sources.settings.hotspot_restarts,
        "hotspot_window_s": sources.settings.hotspot_window_s,
        "hotspots": hotspots,
        "circuits": circuits,
        "paused": paused,
        "escalations": escalations,
        "escalated": bool(escalated),
        "total_processes": _sum(processes for _, processes in samples) if samples else None,
        "workers": workers,
        "shed": state["shed"],
        "knowledge": knowledge,
        "lessons_total": None if knowledge is None else knowledge.get("total_lessons"),
        "store": state["store"],
    }
    if sources.store.degraded:  # the store stopped answering while the report was read: nothing is known
        return unknown_health(sources, local=local)
    if local is not None:
        result.update(local_fields(local))
    if events > 0:
        result["events"] = recent_events(sources, events)
    if lessons > 0:
        result["lessons"] = lessons_view(sources, lessons)
    return result


def summary_numbers(health: Mapping[str, Any]) -> dict[str, object]:
    """The numbers every surface must agree on (used to compare them; times and memory excluded)."""
    return {
        "score": health["score"],
        "state": health["state"],
        "restarts": {q: dict(c) for q, c in health["restart_counts"].items()},
        "hotspots": sorted(h["child"] for h in health["hotspots"]),
        "circuits": {n: c["state"] for n, c in health["circuits"].items()},
        "paused": sorted((p["child"], p["reason"]) for p in health["paused"]),
        "escalated": sorted(e["domain"] for e in health["escalations"]),
    }
