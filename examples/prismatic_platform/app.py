"""The Prismatic Platform as a Celery app: five domains under a one_for_one top level.

Broker and store come from ``PRISMATIC_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); ``PRISMATIC_EMBEDDED=1`` uses Celery's in-memory
broker and an in-process store instead (the demo's fallback).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import prismatic_celery

TREE: dict[str, dict[str, Any]] = {
    "core": {"strategy": "rest_for_one",
             "children": ["storage_coordinator", "cache_manager", "telemetry_collector"]},
    "osint": {"strategy": "one_for_one",
              "children": ["adapter_registry", "source_manager", "monitoring_engine"]},
    "security": {"strategy": "one_for_one",
                 "children": ["threat_analyzer", "perimeter_scanner", "compliance_checker"]},
    "dd": {"strategy": "one_for_one",
           "children": ["case_manager", "entity_resolver", "pipeline_coordinator"]},
    "evolution": {"strategy": "rest_for_one",
                  "children": ["mendel_engine", "mycelial_network", "fitness_evaluator"]},
}

# Every child queue gets a task named platform.<queue>, routed there by the child's task glob.
DOMAINS = {
    name: {**spec, "children": [{"queue": q, "tasks": [f"platform.{q}"]} for q in spec["children"]]}
    for name, spec in TREE.items()
}

REDIS_URL = os.environ.get("PRISMATIC_REDIS_URL", "redis://127.0.0.1:6379/0")
EMBEDDED = os.environ.get("PRISMATIC_EMBEDDED") == "1"

app = Celery(
    "prismatic_platform",
    broker="memory://" if EMBEDDED else REDIS_URL,
    backend="cache+memory://" if EMBEDDED else REDIS_URL,
)
app.conf.update(
    prismatic_namespace="prismatic-demo",
    prismatic_store_url="memory://" if EMBEDDED else REDIS_URL,
    prismatic_domains=DOMAINS,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
prismatic_celery.install(app)


def _make_task(queue: str) -> None:
    def work(item: int) -> dict[str, Any]:
        return {"child": queue, "item": item}

    work.__name__ = queue
    app.task(name=f"platform.{queue}")(work)


for _spec in TREE.values():
    for _queue in _spec["children"]:
        _make_task(_queue)
