"""The state and the report when the store does not answer: everything ``unknown``, nothing claimed.

The declared tree is still shown (it is configuration, not store state), each domain and child with the
status ``unknown`` and every count None, so a surface never shows a number it could not read.
"""

from __future__ import annotations

import time
from typing import Any

from .samples import WorkerSample
from .sources import TreeSources
from .views import store_view

__all__ = ["unknown_health", "unknown_state"]


def unknown_state(sources: TreeSources) -> dict[str, Any]:
    """The declared tree when the store does not answer: every child and domain ``unknown``, nothing claimed."""
    described = sources.supervisor.describe()
    for domain in described["domains"]:
        domain.update({"status": "unknown", "escalated": None, "escalation": None, "cooldown": None,
                       "restarts_total": None, "restarts_in_window": None, "memory_rss_bytes": None})
        for child in domain["children"]:
            child.update({"status": "unknown", "restarts_total": None, "restarts_in_window": None, "hotspot": None,
                          "served": None, "paused": None, "pause": None, "shed": None})
    described.update({"escalated": None, "shed": None, "at": time.time(), "state": "unknown",
                      "store": {**store_view(sources), "reachable": False}})
    return described


def local_fields(local: WorkerSample) -> dict[str, object]:
    """What a worker's own report adds: its hostname, pid, pool, processes and total RSS."""
    return {"hostname": local.hostname, "pid": local.pid, "pool": local.pool, "processes": list(local.processes),
            "rss_total": local.rss_total}


def unknown_health(sources: TreeSources, *, local: WorkerSample | None = None) -> dict[str, Any]:
    """The report when the store does not answer: state ``unknown``, no score, no count claimed.

    The same keys as :func:`~prismatic_celery.observability.health.get_tree_health`'s, with None or empty
    values; ``reason`` says why.
    """
    state = unknown_state(sources)
    settings = sources.settings
    result = {
        "scope": "cluster" if local is None else "worker", "namespace": sources.keys.namespace, "at": state["at"],
        "score": None, "state": "unknown", "reason": f"store {state['store']['url']} unreachable",
        "penalties": [], "domains": state["domains"], "budget": state["budget"], "restart_counts": {},
        "restarts_total": None, "restarts_in_window": None, "hotspot_threshold": settings.hotspot_restarts,
        "hotspot_window_s": settings.hotspot_window_s, "hotspots": [], "circuits": {}, "paused": [],
        "escalations": [], "escalated": None, "total_processes": len(local.processes) if local else None,
        "workers": [], "shed": None, "knowledge": None, "lessons_total": None, "store": state["store"],
    }
    if local is not None:
        result.update(local_fields(local))
    return result
