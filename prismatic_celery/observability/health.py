"""Tree health: the seed's SupervisionIntrospector ``get_tree_health()``, per worker and cluster-wide.

Everything but a worker's own processes is read from the store, so every
surface (``celery supervision health``, ``celery inspect supervision_health``,
the Flower page and API, Prometheus) reports the same numbers for the same
moment. What is read (``<ns>`` is ``prismatic_namespace``):

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

Lessons, knowledge metrics and shed counts come from ``runtime.learning`` and
``runtime.shedding`` when the runtime has them (else they are reported as None,
shown "n/a").

Health score
------------
``score = max(0, 100 - sum of penalties)`` over what holds *now*:

| Condition | Points each | Cap |
|---|---|---|
| escalated domain (its supervisor budget is exhausted, operators are needed) | 40 | none |
| domain in cool-down (its restart budget was exceeded) | 20 | none |
| open circuit | 15 | none |
| hotspot child (more than ``prismatic_hotspot_restarts`` restarts in the window) | 10 | none |
| half-open circuit | 5 | none |
| paused child, other than one paused by its domain's cool-down or escalation | 5 | none |
| unserved child (no live worker consumes its queue) | 10 | none |
| restart within the hotspot window, all children together | 1 | 20 |

The state is ``escalated`` whenever a domain is escalated (whatever the score),
else ``healthy`` from 80, ``degraded`` from 50 and ``critical`` below 50. When the
store does not answer, nothing above can be known: the state is ``unknown``, the
score None, and every child's status ``unknown`` (see :func:`unknown_health`). The
score depends only on cluster-wide state, so every worker reports the cluster's
score; memory and process counts are reported, never scored (they move on
their own and have no threshold that means the same for every app).

Processes and memory: a worker counts its main process and its pool processes
(solo and threads pools run tasks in the main process). The memory of a domain
is the RSS of the pool processes that served that domain's tasks (a process
that served two domains counts in both). Workers publish this sample every
``max(5 s, prismatic_reconcile_interval_s)`` to ``prismatic:{<ns>}:health:<hostname>``
(JSON, expiring) so the cluster view can add them up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..log import get_logger, log_event
from .sampler import WorkerSample, rss_bytes, sample_key, sample_worker
from .sampler import sum_known as _sum
from .workers import live_registrations, served_queues

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "EVENT_FIELDS",
    "PENALTIES",
    "Penalty",
    "Score",
    "ScoreInputs",
    "WorkerSample",
    "event_fields_table",
    "get_tree_health",
    "health_score",
    "knowledge_view",
    "lessons_view",
    "recent_events",
    "rss_bytes",
    "sample_key",
    "sample_worker",
    "shed_view",
    "store_view",
    "summary_numbers",
    "tree_state",
    "unknown_health",
    "unknown_state",
]

logger = get_logger("health")

# -- the score ---------------------------------------------------------------------------------------

#: Points taken off per occurrence of each condition (see the module docstring).
PENALTIES: dict[str, int] = {
    "escalated_domain": 40,
    "cooldown_domain": 20,
    "open_circuit": 15,
    "hotspot": 10,
    "half_open_circuit": 5,
    "paused_child": 5,
    "unserved_child": 10,
    "recent_restart": 1,
}
#: Largest total penalty of a condition (absent: no cap).
CAPS: dict[str, int] = {"recent_restart": 20}
HEALTHY_FROM = 80
DEGRADED_FROM = 50


@dataclass(frozen=True)
class ScoreInputs:
    """What the score is computed from (counts of what holds now)."""

    escalated_domains: int = 0
    cooldown_domains: int = 0
    open_circuits: int = 0
    half_open_circuits: int = 0
    hotspots: int = 0
    paused_children: int = 0
    unserved_children: int = 0
    recent_restarts: int = 0

    def counts(self) -> dict[str, int]:
        """Each penalty's name with its count."""
        return {
            "escalated_domain": self.escalated_domains,
            "cooldown_domain": self.cooldown_domains,
            "open_circuit": self.open_circuits,
            "hotspot": self.hotspots,
            "half_open_circuit": self.half_open_circuits,
            "paused_child": self.paused_children,
            "unserved_child": self.unserved_children,
            "recent_restart": self.recent_restarts,
        }


@dataclass(frozen=True)
class Penalty:
    """Points taken off for one condition."""

    reason: str
    count: int
    points: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"reason": self.reason, "count": self.count, "points": self.points}


@dataclass(frozen=True)
class Score:
    """A health score 0-100, its state and the penalties that made it."""

    score: int
    state: str
    penalties: tuple[Penalty, ...] = field(default_factory=tuple)


def health_score(inputs: ScoreInputs) -> Score:
    """The documented formula: 100 minus capped penalties, clamped to 0..100 (a pure function)."""
    penalties = []
    for reason, count in inputs.counts().items():
        if count <= 0:
            continue
        points = PENALTIES[reason] * count
        if reason in CAPS:
            points = min(points, CAPS[reason])
        penalties.append(Penalty(reason, count, points))
    score = max(0, min(100, 100 - sum(p.points for p in penalties)))
    if inputs.escalated_domains:
        state = "escalated"
    elif score >= HEALTHY_FROM:
        state = "healthy"
    elif score >= DEGRADED_FROM:
        state = "degraded"
    else:
        state = "critical"
    return Score(score, state, tuple(penalties))


# -- cluster-wide state from the store -----------------------------------------------------------------


def tree_state(runtime: Runtime, *, now: float | None = None,
               registrations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The declared tree with each child's pauses, restarts, hotspot flag, shed counts (``{mode: n}``) and whether
    a live worker serves it, and each domain's escalation (``registrations``: the live workers', read here when
    not given; ``shed`` is :func:`shed_view`)."""
    from ..supervision.hotspots import is_hotspot
    from ..supervision.pauses import read_pauses

    store, keys, settings = runtime.store, runtime.keys, runtime.settings
    tree = runtime.supervisor
    at = store.time() if now is None else now
    if registrations is None:
        registrations = live_registrations(store, keys, settings)
    served = served_queues(registrations)
    pauses = read_pauses(store, keys, tree, tree.queues)
    totals = store.hgetall(keys.key("restart-totals"))
    names = [d.name for d in tree.domain_list]
    escalations = dict(zip(names, store.get_many([keys.key("escalation", n) for n in names]), strict=True))
    described = tree.describe()
    shed = shed_view(runtime)
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
    described["store"] = store_view(runtime)
    return described


def store_view(runtime: Runtime) -> dict[str, Any]:
    """Which store the report was read from, whether workers share it and whether it answered."""
    store = runtime.store
    return {"url": store.display_url, "shared": store.shared, "reachable": not store.degraded}


def unknown_state(runtime: Runtime) -> dict[str, Any]:
    """The declared tree when the store does not answer: every child and domain ``unknown``, nothing claimed."""
    described = runtime.supervisor.describe()
    for domain in described["domains"]:
        domain.update({"status": "unknown", "escalated": None, "escalation": None, "cooldown": None,
                       "restarts_total": None, "restarts_in_window": None, "memory_rss_bytes": None})
        for child in domain["children"]:
            child.update({"status": "unknown", "restarts_total": None, "restarts_in_window": None, "hotspot": None,
                          "served": None, "paused": None, "pause": None, "shed": None})
    described.update({"escalated": None, "shed": None, "at": time.time(), "state": "unknown",
                      "store": {**store_view(runtime), "reachable": False}})
    return described


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def circuits_view(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Every circuit's shared record: the declared ones and any other found in the store (read, never changed)."""
    from ..circuits.registry import indexed_circuits
    from ..circuits.storage import CircuitStorage

    circuits = runtime.circuits
    names = set(circuits.names) | set(indexed_circuits(runtime.store, runtime.keys))
    found: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        declared = name in circuits
        storage = circuits.get(name).storage if declared else CircuitStorage(runtime.store, runtime.keys, name)
        record = storage.read().describe()
        found[name] = {
            "state": record["state"], "fail_counter": record["fail_counter"],
            "fail_max": storage.spec.fail_max if declared else None,
            "retry_after_s": record["retry_after_s"], "opened_at": record["opened_at"],
            "open_until": record["open_until"], "reason": record["reason"], "declared": declared,
        }
    return found


def workers_view(runtime: Runtime, registrations: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Live workers (registrations, read from the index when not given) with their latest processes/memory
    sample, by hostname."""
    store = runtime.store
    if registrations is None:
        registrations = live_registrations(store, runtime.keys, runtime.settings)
    rows: list[dict[str, Any]] = []
    hostnames = sorted(str(r.get("hostname")) for r in registrations if r.get("hostname"))
    samples = dict(zip(hostnames, store.get_many([sample_key(runtime.keys, h) for h in hostnames]), strict=True))
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


def recent_events(runtime: Runtime, count: int = 50) -> list[dict[str, Any]]:
    """The newest ``count`` entries of ``prismatic:{<ns>}:events``, newest first, numbers typed."""
    from .events import typed_fields

    entries = runtime.store.stream_range(runtime.keys.key("events"), max(1, count))
    return [{"id": entry_id, **typed_fields(fields)} for entry_id, fields in reversed(entries)]


def _optional(runtime: Runtime, name: str, learning_name: str) -> Any:
    """``runtime.<name>``, else ``runtime.learning.<learning_name>``, else None."""
    found = getattr(runtime, name, None)
    if found is None:
        found = getattr(getattr(runtime, "learning", None), learning_name, None)
    return found


def knowledge_view(runtime: Runtime) -> dict[str, Any] | None:
    """The knowledge metrics (``runtime.knowledge.snapshot().to_json()``); None when not available."""
    recorder = _optional(runtime, "knowledge", "metrics")
    snapshot = getattr(recorder, "snapshot", None)
    if not callable(snapshot):
        return None
    try:
        data = snapshot().to_json()
    except Exception as exc:  # an optional piece must not break health
        log_event(logging.WARNING, "knowledge-unavailable", logger, error=repr(exc)[:200])
        return None
    return dict(data) if isinstance(data, Mapping) else None


def lessons_view(runtime: Runtime, limit: int = 20) -> list[dict[str, Any]] | None:
    """The most recently seen lessons (``runtime.lessons.all(limit)``); None when not available."""
    lessons = _optional(runtime, "lessons", "lessons")
    listing = getattr(lessons, "all", None)
    if not callable(listing):
        return None
    try:
        return [lesson.to_json() for lesson in listing(limit)]
    except Exception as exc:  # an optional piece must not break health
        log_event(logging.WARNING, "lessons-unavailable", logger, error=repr(exc)[:200])
        return None


def shed_view(runtime: Runtime) -> dict[str, Any] | None:
    """Shed message counts per queue (``runtime.shedding.counts()``); None when not available.

    Accepted shapes: ``{queue: n}`` or ``{queue: {mode: n}}`` (mode ``park`` / ``drop``).
    """
    shedding = getattr(runtime, "shedding", None)
    counts = getattr(shedding, "counts", None)
    if not callable(counts):
        return None
    try:
        raw = counts()
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


def get_tree_health(
    runtime: Runtime,
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
    if not runtime.store.ping():
        return unknown_health(runtime, local=local)
    registrations = live_registrations(runtime.store, runtime.keys, runtime.settings)
    state = tree_state(runtime, now=now, registrations=registrations)
    at = float(state["at"])
    circuits = circuits_view(runtime)
    workers = workers_view(runtime, registrations)
    samples: list[dict[str, Any]]
    if local is not None:
        samples = [{"memory_per_domain": local.memory_per_domain, "total_processes": len(local.processes)}]
    else:
        samples = [w for w in workers if w["total_processes"] is not None]
    domains = []
    hotspots, paused, escalations = [], [], []
    restart_counts: dict[str, dict[str, int]] = {}
    for domain in state["domains"]:
        name = domain["name"]
        memory = [s["memory_per_domain"].get(name) for s in samples]
        domain["memory_rss_bytes"] = _sum(memory)
        for child in domain["children"]:
            queue = child["queue"]
            restart_counts[queue] = {"total": child["restarts_total"], "in_window": child["restarts_in_window"]}
            if child["hotspot"]:
                hotspots.append({"domain": name, "child": queue, "restarts": child["restarts_in_window"],
                                 "window_s": runtime.settings.hotspot_window_s})
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
    knowledge = knowledge_view(runtime)
    result: dict[str, Any] = {
        "scope": "cluster" if local is None else "worker",
        "namespace": runtime.keys.namespace,
        "at": at,
        "score": score.score,
        "state": score.state,
        "penalties": [p.to_json() for p in score.penalties],
        "domains": domains,
        "budget": state["budget"],
        "restart_counts": restart_counts,
        "restarts_total": sum(c["total"] for c in restart_counts.values()),
        "restarts_in_window": inputs.recent_restarts,
        "hotspot_threshold": runtime.settings.hotspot_restarts,
        "hotspot_window_s": runtime.settings.hotspot_window_s,
        "hotspots": hotspots,
        "circuits": circuits,
        "paused": paused,
        "escalations": escalations,
        "escalated": bool(escalated),
        "total_processes": _sum(s["total_processes"] for s in samples) if samples else None,
        "workers": workers,
        "shed": state["shed"],
        "knowledge": knowledge,
        "lessons_total": None if knowledge is None else knowledge.get("total_lessons"),
        "store": state["store"],
    }
    if runtime.store.degraded:  # the store stopped answering while the report was read: nothing is known
        return unknown_health(runtime, local=local)
    if local is not None:
        result.update({"hostname": local.hostname, "pid": local.pid, "pool": local.pool,
                       "processes": list(local.processes), "rss_total": local.rss_total})
    if events > 0:
        result["events"] = recent_events(runtime, events)
    if lessons > 0:
        result["lessons"] = lessons_view(runtime, lessons)
    return result


def unknown_health(runtime: Runtime, *, local: WorkerSample | None = None) -> dict[str, Any]:
    """The report when the store does not answer: state ``unknown``, no score, no count claimed.

    The same keys as :func:`get_tree_health`'s, with None or empty values; ``reason`` says why.
    """
    state = unknown_state(runtime)
    result: dict[str, Any] = {
        "scope": "cluster" if local is None else "worker", "namespace": runtime.keys.namespace, "at": state["at"],
        "score": None, "state": "unknown", "reason": f"store {state['store']['url']} unreachable",
        "penalties": [], "domains": state["domains"], "budget": state["budget"], "restart_counts": {},
        "restarts_total": None, "restarts_in_window": None, "hotspot_threshold": runtime.settings.hotspot_restarts,
        "hotspot_window_s": runtime.settings.hotspot_window_s, "hotspots": [], "circuits": {}, "paused": [],
        "escalations": [], "escalated": None, "total_processes": len(local.processes) if local else None,
        "workers": [], "shed": None, "knowledge": None, "lessons_total": None, "store": state["store"],
    }
    if local is not None:
        result.update({"hostname": local.hostname, "pid": local.pid, "pool": local.pool,
                       "processes": list(local.processes), "rss_total": local.rss_total})
    return result


def summary_numbers(health: Mapping[str, Any]) -> dict[str, Any]:
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


# -- the supervision events --------------------------------------------------------------------------

#: Fields shared by the events of one crashed task (``hostname`` becomes the Celery event's own field).
TASK_CONTEXT = {
    "child": "the child's queue",
    "task": "task name",
    "task_id": "task id (the same across its re-runs)",
    "exception": "exception class name",
}

#: The body of each ``supervision-<type>`` Celery event, and of the ``prismatic:{<ns>}:events`` stream
#: entries. Every Celery event also carries Celery's own ``type``, ``hostname`` (the worker),
#: ``timestamp``, ``utcoffset``, ``pid`` and ``clock``. Stream entries add ``type`` (``dead_letter``
#: for ``supervision-dead-letter``), ``time`` (seconds since the epoch) and ``hostname``; pause
#: entries written by the restart script also ``paused`` (how many queues it paused). A field that
#: does not apply to an event is absent. Each failed message has exactly one event (remediation,
#: dead-letter or crash); a child failure adds restart, and pause or escalation when they follow.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "restart": {
        "domain": "the child's domain", "child": "the child that failed (its queue)",
        **{k: f"{v} (the failure that tripped it)" for k, v in TASK_CONTEXT.items() if k != "child"},
        "executions": "the child's executions in its window when it failed",
        "failures": "failed executions among them",
        "window_s": "the window's length in seconds",
        "child_restarts": "restarts of the child within the hotspot window, this one included",
        "domain_restarts": "restarts of the domain within its budget period, this one included",
    },
    "remediation": {
        "domain": "the child's domain", **TASK_CONTEXT,
        "action": "remediation applied: retry_with_backoff, circuit_break, restart_child, recycle_process, "
                  "redeliver (a pool-process death)",
        "rule": "name of the rule (or lesson) that chose it; empty for an unnamed rule",
        "failure_class": "state_corruption, external_dependency, resource_exhaustion or logic_error",
        "fingerprint": "the failure's fingerprint (its lesson)",
        "attempt": "re-run number of this message (1 = first re-run; the plugin's own count, not Celery's retries)",
        "countdown_s": "seconds before the re-run (backoff, or the end of the domain's cool-down plus jitter)",
        "deaths": "pool-process deaths this message caused so far (pool deaths only)",
    },
    "dead_letter": {
        "domain": "the child's domain", **TASK_CONTEXT,
        "reason": "restarts_exhausted, dead_letter, shed, escalated: <reason>, or quarantined (killed its pool "
                  "process prismatic_quarantine_deliveries times)",
        "action": "the remediation the rules (or a lesson) chose", "rule": "its rule",
        "failure_class": "the failure class", "fingerprint": "the failure's fingerprint",
        "attempts": "executions of the message, this one included",
        "deaths": "pool-process deaths it caused (quarantine only)",
    },
    "escalation": {
        "domain": "the domain", **TASK_CONTEXT,
        "reason": "supervisor_budget_exceeded (the domain escalated: CRITICAL), or the escalate action's reason "
                  "(e.g. unknown_failure_pattern, disk_full), once per new failure pattern",
        "supervisor_restarts": "domain restarts counted by the top-level supervisor (budget case)",
        "cooldown_s": "how long the domain stays paused (budget case)",
        "action": "remediation that escalated (pattern case)",
        "rule": "rule name (pattern case)",
        "failure_class": "failure class (pattern case)",
        "fingerprint": "the new failure pattern (pattern case)",
    },
    "circuit": {
        "name": "circuit breaker name",
        "old_state": "closed, open or half-open",
        "new_state": "closed, open or half-open",
        "reason": "why it changed (threshold, reset-timeout, forced, trial-succeeded...)",
        "fail_counter": "failures counted when it changed",
        "fail_max": "failures that open it",
        "retry_after_s": "seconds until a trial call may half-open it (0 unless open)",
    },
    "shed": {
        "domain": "the queue's domain",
        "queue": "the shedding queue",
        "task": "task name",
        "task_id": "task id",
        "backlog": "the queue's backlog at the decision (the worker's last read minus what it received since)",
        "threshold": "backlog above which the queue sheds",
        "importance": "the message's importance (0 lowest, 9 highest)",
        "cutoff": "messages below this importance are shed",
        "mode": "park (kept, replayable) or drop",
    },
    "pause": {
        "domain": "the domain whose queues stopped being consumed",
        "queues": "comma-separated queues paused",
        "reason": "rest_for_one, one_for_all, cooldown, escalated, manual or circuit",
        "cooldown_s": "pause length in seconds (cool-down, escalation and manual pauses)",
        "by": "who paused (manual pauses)",
        "child": "the child whose failure paused them (strategy, cool-down and escalation pauses)",
        **{k: f"{v} (of the failure that paused)" for k, v in TASK_CONTEXT.items() if k != "child"},
    },
    "resume": {
        "domain": "the domain resumed",
        "queues": "comma-separated queues whose pause by this cause ended",
        "reason": "child_recovered (the failed child succeeded) or operator",
        "child": "the child whose success ended its rest_for_one pauses (child_recovered)",
        "at": "when, seconds since the epoch (child_recovered)",
        "by": "who resumed (operator)",
    },
    "crash": {
        "domain": "the child's domain", **TASK_CONTEXT,
        "outcome": "normal_exit (a transient child's normal exception), not_requeueable (a direct call), "
                   "temporary (a temporary child's message: it fails as in plain Celery)",
        "action": "remediation the rules chose", "rule": "rule name", "failure_class": "failure class",
        "fingerprint": "the failure's fingerprint",
        "deaths": "pool-process deaths it caused (a temporary child's pool death)",
    },
}

def event_fields_table() -> str:
    """:data:`EVENT_FIELDS` as a Markdown table (for the README)."""
    lines = ["| Celery event | Field | Meaning |", "|---|---|---|"]
    for kind, fields in EVENT_FIELDS.items():
        for index, (name, meaning) in enumerate(fields.items()):
            label = f"`supervision-{kind.replace('_', '-')}`" if index == 0 else ""
            lines.append(f"| {label} | `{name}` | {meaning} |")
    return "\n".join(lines)
