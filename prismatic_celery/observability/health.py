"""Tree health: the seed's SupervisionIntrospector ``get_tree_health()``, per worker and cluster-wide.

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

Processes and memory (:mod:`.samples`): each worker samples its main and pool processes here
(:func:`sample_worker`) and publishes the sample every ``max(5 s, prismatic_reconcile_interval_s)``
to ``prismatic:{<ns>}:health:<hostname>`` (JSON, expiring) so the cluster view can add them up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..log import get_logger, log_event
from .samples import WorkerSample
from .score import ScoreInputs, health_score
from .sources import HealthSources
from .unknown import local_fields, unknown_health
from .views import circuits_view, knowledge_view, lessons_view, recent_events, tree_state, workers_view
from .workers import live_registrations

if TYPE_CHECKING:
    from ..runtime import Runtime  # the worker sampler's only (it moves to observability/sampler.py)

__all__ = [
    "connect_sampler",
    "get_tree_health",
    "rss_bytes",
    "sample_key",
    "sample_worker",
    "summary_numbers",
]

logger = get_logger("health")

# -- a worker's processes and memory -----------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (``/proc``, else psutil); None when unknown."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]  # optional; no stubs required

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # psutil absent, or the process is gone: unknown
        return None


def _pool_pids(consumer: Any) -> list[int]:
    pool = getattr(consumer, "pool", None)
    try:
        info = pool.info if pool is not None else {}
        pids = info.get("processes") if isinstance(info, Mapping) else None
    except Exception:  # a pool that is starting or stopping has no stable info
        pids = None
    return [int(p) for p in pids or () if isinstance(p, int)]


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def sample_worker(
    runtime: Runtime, consumer: Any, *, hostname: str | None = None, now: float | None = None
) -> WorkerSample:
    """Sample this worker's processes and the memory of the pool processes serving each domain."""
    main = os.getpid()
    pool_pids = _pool_pids(consumer)
    processes = tuple(sorted({main, *pool_pids}))
    rss = {pid: rss_bytes(pid) for pid in processes}
    memory: dict[str, int | None] = {}
    reconciler = runtime.reconciler
    served: dict[str, tuple[int, ...]] = {}
    if reconciler is not None:
        for _ in range(3):  # the event loop may add a pid while we copy: try again
            try:
                served = {d: tuple(p) for d, p in list(reconciler.served_pids.items())}
                break
            except RuntimeError:
                continue
    live = set(processes)
    for domain in runtime.supervisor.domain_list:
        pids = [p for p in served.get(domain.name, ()) if p in live]
        memory[domain.name] = _sum(rss[p] for p in pids) if pids else None
    pool = getattr(consumer, "pool", None)
    return WorkerSample(
        hostname=hostname or str(getattr(consumer, "hostname", None) or runtime.hostname or "unknown"),
        pid=main,
        pool=type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else None,
        processes=processes,
        memory_per_domain=memory,
        rss_total=_sum(rss.values()),
        at=time.time() if now is None else now,  # a sample's own clock: no store round trip for it
    )


def sample_key(runtime: Runtime, hostname: str) -> str:
    """``prismatic:{<ns>}:health:<hostname>``: a worker's latest sample (JSON, expires)."""
    return runtime.keys.key("health", hostname)


SAMPLE_INTERVAL_S = 5.0  # processes and memory change slowly: a sample every 5 s is fresh enough


class _Sampler:
    """Publishes this worker's sample from a daemon thread (never on the event loop)."""

    def __init__(self, runtime: Runtime, consumer: Any) -> None:
        self.runtime = runtime
        self.consumer = consumer
        self.hostname = str(consumer.hostname)
        self.interval_s = max(SAMPLE_INTERVAL_S, runtime.settings.reconcile_interval_s)
        self.ttl_s = max(15.0, 3 * self.interval_s)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="prismatic-health", daemon=True)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                sample = sample_worker(self.runtime, self.consumer, hostname=self.hostname)
                self.runtime.store.set_json(sample_key(self.runtime, self.hostname), sample.to_json(),
                                            ttl_s=self.ttl_s)
            except Exception as exc:  # the sampler never stops the worker; the next period tries again
                log_event(logging.ERROR, "health-sample-failed", logger, error=repr(exc)[:300])
            self.stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(Exception):  # shutting down: the key expires anyway
            self.runtime.store.delete(sample_key(self.runtime, self.hostname))


_samplers: dict[int, _Sampler] = {}
_connected = False


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    try:
        from ..runtime import get_runtime

        app = getattr(sender, "app", None)
        runtime = get_runtime(app) if app is not None else None
        if runtime is None or id(sender) in _samplers:
            return
        sampler = _samplers[id(sender)] = _Sampler(runtime, sender)
        sampler.thread.start()
    except Exception as exc:  # observation only
        log_event(logging.ERROR, "health-sampler-failed", logger, error=repr(exc)[:300])


def _on_worker_shutdown(**_: Any) -> None:
    for sampler in list(_samplers.values()):
        sampler.stop()
    _samplers.clear()


def connect_sampler() -> None:
    """Publish each worker's sample (``worker_ready`` starts it, ``worker_shutdown`` stops it); idempotent."""
    global _connected
    if _connected:
        return
    from celery import signals

    _connected = True
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="prismatic.health.ready")
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid="prismatic.health.shutdown")


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
