"""The tree's state and the views of the health report, read from the store.

Everything but a worker's own processes is read from the store, so every surface
(``celery supervision health``, ``celery inspect supervision_health``, the Flower page
and API, Prometheus) reports the same numbers for the same moment. Each view takes
only the pieces it reads (:mod:`.sources`).

Lessons and knowledge metrics come from ``learning`` (``lessons.all(limit)`` and
``metrics.snapshot()``), shed counts from ``shedding.counts()``, when the runtime has
them; else they are reported as None (shown "n/a").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from ..log import get_logger, log_event
from .samples import WorkerSample, sample_key_for
from .sources import CircuitSources, LearningHolder, SettingsSources, StoreSources, TreeSources, shed_counts_of
from .workers import live_registrations, served_queues

__all__ = ["CircuitView", "ShedView", "StoreView", "WorkerRow", "circuits_view", "knowledge_view", "lessons_view",
           "recent_events", "shed_view", "store_view", "tree_state", "workers_view"]

logger = get_logger("health")


class StoreView(TypedDict):
    """Which store a report was read from (``store`` of the report)."""

    url: str
    shared: bool
    reachable: bool


class CircuitView(TypedDict):
    """A circuit's shared record (``circuits`` of the report, by name)."""

    state: str
    fail_counter: int
    fail_max: int | None
    retry_after_s: float
    opened_at: float | None
    open_until: float | None
    reason: str
    declared: bool


class WorkerRow(TypedDict):
    """A live worker with its latest sample (``workers`` of the report)."""

    hostname: str
    pid: object
    pool: object
    concurrency: object
    queues: object
    domains: object
    total_processes: int | None
    memory_per_domain: dict[str, int | None]
    rss_total: int | None
    sampled_at: float | None


class ShedView(TypedDict):
    """Messages shed per queue and mode, and their total (``shed`` of the report)."""

    queues: dict[str, dict[str, int]]
    total: int


def _int(value: object) -> int:
    if not isinstance(value, (int, float, str, bytes)):
        return 0
    try:
        return int(value or 0)
    except ValueError:
        return 0


def tree_state(sources: TreeSources, *, now: float | None = None,
               registrations: Sequence[Mapping[str, object]] | None = None) -> dict[str, Any]:
    """The declared tree with each child's pauses, restarts, hotspot flag, shed counts (``{mode: n}``) and whether
    a live worker serves it, and each domain's escalation (``registrations``: the live workers', read here when
    not given; ``shed`` is :func:`shed_view`)."""
    from ..supervision.hotspots import is_hotspot
    from ..supervision.pauses import read_pauses

    store, keys, settings = sources.store, sources.keys, sources.settings
    tree = sources.supervisor
    at = store.time() if now is None else now
    if registrations is None:
        registrations = live_registrations(store, keys, settings)
    served = served_queues(registrations)
    pauses = read_pauses(store, keys, tree, tree.queues)
    totals = store.hgetall(keys.key("restart-totals"))
    names = [d.name for d in tree.domain_list]
    escalations = dict(zip(names, store.get_many([keys.key("escalation", n) for n in names]), strict=True))
    described = tree.describe()
    shed = shed_view(sources)
    for domain in described["domains"]:
        escalation = escalations.get(domain["name"])
        domain["escalated"] = isinstance(escalation, dict)
        domain["escalation"] = escalation if isinstance(escalation, dict) else None
        for child in domain["children"]:
            queue = child["queue"]
            recent = store.window_count(keys.key("restarts", queue), at, settings.hotspot_window_s)
            pause = pauses.get(queue)
            child.update({
                "restarts_total": _int(totals.get(queue)),
                "restarts_in_window": recent,
                "hotspot": is_hotspot(recent, settings.hotspot_restarts),
                "served": queue in served,
                "paused": pause is not None,
                "pause": None if pause is None else {"reason": pause.reason, "by": pause.by,
                                                     "remaining_s": round(max(0.0, pause.until - at), 3)},
                "shed": None if shed is None else shed["queues"].get(queue, {}),
            })
        reasons = {c["pause"]["reason"] for c in domain["children"] if c["paused"]}
        domain["cooldown"] = not domain["escalated"] and "cooldown" in reasons
        domain["status"] = ("escalated" if domain["escalated"] else "cooldown" if domain["cooldown"]
                            else "paused" if reasons
                            else "unserved" if not any(c["served"] for c in domain["children"]) else "running")
        domain["restarts_total"] = sum(c["restarts_total"] for c in domain["children"])
        domain["restarts_in_window"] = sum(c["restarts_in_window"] for c in domain["children"])
    described["escalated"] = any(d["escalated"] for d in described["domains"])
    described["shed"] = shed
    described["at"] = at
    described["state"] = "known"
    described["store"] = store_view(sources)
    return described


def store_view(sources: StoreSources) -> StoreView:
    """Which store the report was read from, whether workers share it and whether it answered."""
    store = sources.store
    return {"url": store.display_url, "shared": store.shared, "reachable": not store.degraded}


def circuits_view(sources: CircuitSources) -> dict[str, CircuitView]:
    """Every circuit's shared record: the declared ones and any other found in the store (read, never changed)."""
    from ..circuits.registry import indexed_circuits
    from ..circuits.storage import CircuitStorage

    circuits = sources.circuits
    names = set(circuits.names) | set(indexed_circuits(sources.store, sources.keys))
    found: dict[str, CircuitView] = {}
    for name in sorted(names):
        declared = name in circuits
        storage = circuits.get(name).storage if declared else CircuitStorage(sources.store, sources.keys, name)
        record = storage.read().describe()
        found[name] = {
            "state": record["state"], "fail_counter": record["fail_counter"],
            "fail_max": storage.spec.fail_max if declared else None,
            "retry_after_s": record["retry_after_s"], "opened_at": record["opened_at"],
            "open_until": record["open_until"], "reason": record["reason"], "declared": declared,
        }
    return found


def workers_view(sources: SettingsSources,
                 registrations: Sequence[Mapping[str, object]] | None = None) -> list[WorkerRow]:
    """Live workers (registrations, read from the index when not given) with their latest processes/memory
    sample, by hostname."""
    store = sources.store
    if registrations is None:
        registrations = live_registrations(store, sources.keys, sources.settings)
    rows: list[WorkerRow] = []
    hostnames = sorted(str(r.get("hostname")) for r in registrations if r.get("hostname"))
    samples = dict(zip(hostnames, store.get_many([sample_key_for(sources.keys, h) for h in hostnames]), strict=True))
    for registration in sorted(registrations, key=lambda r: str(r.get("hostname"))):
        hostname = str(registration.get("hostname"))
        sample = WorkerSample.from_json(samples.get(hostname)) if samples.get(hostname) is not None else None
        rows.append({
            "hostname": hostname,
            "pid": registration.get("pid"),
            "pool": registration.get("pool"),
            "concurrency": registration.get("concurrency"),
            "queues": registration.get("queues") or [],
            "domains": registration.get("domains") or [],
            "total_processes": len(sample.processes) if sample else None,
            "memory_per_domain": dict(sample.memory_per_domain) if sample else {},
            "rss_total": sample.rss_total if sample else None,
            "sampled_at": sample.at if sample else None,
        })
    return rows


def recent_events(sources: StoreSources, count: int = 50) -> list[dict[str, object]]:
    """The newest ``count`` entries of ``prismatic:{<ns>}:events``, newest first, numbers typed."""
    from .events import typed_fields

    entries = sources.store.stream_range(sources.keys.key("events"), max(1, count))
    return [{"id": entry_id, **typed_fields(fields)} for entry_id, fields in reversed(entries)]


def knowledge_view(sources: LearningHolder) -> dict[str, object] | None:
    """The knowledge metrics (``learning.metrics.snapshot().to_json()``); None when not available."""
    learning = sources.learning
    if learning is None:
        return None
    try:
        data = learning.metrics.snapshot().to_json()
    except Exception as exc:  # an optional piece must not break health
        log_event(logging.WARNING, "knowledge-unavailable", logger, error=repr(exc)[:200])
        return None
    return dict(data) if isinstance(data, Mapping) else None


def lessons_view(sources: LearningHolder, limit: int = 20) -> list[dict[str, Any]] | None:
    """The most recently seen lessons (``learning.lessons.all(limit)``, each ``to_json()``); None when not
    available."""
    learning = sources.learning
    if learning is None:
        return None
    try:
        return [dict(lesson.to_json()) for lesson in learning.lessons.all(limit)]
    except Exception as exc:  # an optional piece must not break health
        log_event(logging.WARNING, "lessons-unavailable", logger, error=repr(exc)[:200])
        return None


def shed_view(sources: object) -> ShedView | None:
    """Shed message counts per queue (``shedding.counts()``, see :func:`~.sources.shed_counts_of`); None when not
    available.

    Accepted shapes: ``{queue: n}`` or ``{queue: {mode: n}}`` (mode ``park`` / ``drop``).
    """
    shedding = shed_counts_of(sources)
    if shedding is None:
        return None
    try:
        raw = shedding.counts()
    except Exception as exc:  # an optional piece must not break health
        log_event(logging.WARNING, "shed-unavailable", logger, error=repr(exc)[:200])
        return None
    result: dict[str, dict[str, int]] = {}
    if isinstance(raw, Mapping):
        for queue, value in raw.items():
            if isinstance(value, Mapping):
                result[str(queue)] = {str(m): _int(n) for m, n in value.items()}
            else:
                result[str(queue)] = {"shed": _int(value)}
    return {"queues": result, "total": sum(sum(v.values()) for v in result.values())}
