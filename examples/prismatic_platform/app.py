"""The Prismatic Platform as a Celery app: five domains under a one_for_one top level.

Broker and store come from ``PRISMATIC_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); ``PRISMATIC_EMBEDDED=1`` uses Celery's in-memory
broker and an in-process store instead (the demo's fallback).

Every child queue has a task ``platform.<queue>(item, fault=None)``; ``fault``
makes it misbehave the way the demo needs: ``dependency`` calls the fake
external service (through the ``external_api`` circuit), ``poison`` kills its
pool process, ``corrupt`` trips an invariant on its first run, ``memory``
runs out of memory on its first run (a re-run by the plugin succeeds).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import prismatic_celery

from .dependency import call

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
    prismatic_circuits={"external_api": {"fail_max": 3, "reset_timeout_s": 2, "strict": True}},
    prismatic_remediation_rules=[
        # An invariant broken in the storage layer: re-run the message (when the child's executions
        # fail at its failure rate, the child restarts: the children declared after it pause until
        # it succeeds again).
        {"name": "storage-invariant", "match": {"failure_class": "state_corruption", "domain": "core"},
         "action": "restart_child"},
    ],
    prismatic_backoff_initial_s=0.3,
    prismatic_backoff_max_s=2.0,
    prismatic_backoff_jitter_s=0.1,
    prismatic_pause_window_s=15,
    prismatic_reconcile_interval_s=0.5,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
prismatic_celery.install(app)


def _make_task(queue: str) -> None:
    def work(self: Any, item: int, fault: str | None = None) -> dict[str, Any]:
        first_run = not prismatic_celery.reruns(self.request)
        if fault == "dependency":
            call(item)
        elif fault == "poison":
            os._exit(1)
        elif fault == "corrupt" and first_run:
            raise AssertionError(f"inconsistent state: ledger total mismatch for item {item}")
        elif fault == "memory" and first_run:
            raise MemoryError(f"cannot allocate 2 GiB for item {item}")
        return {"child": queue, "item": item, "pid": os.getpid(), "reruns": prismatic_celery.reruns(self.request)}

    work.__name__ = queue
    if queue in ("adapter_registry", "source_manager"):
        app.task(name=f"platform.{queue}", bind=True, circuits=["external_api"])(work)
    else:
        app.task(name=f"platform.{queue}", bind=True)(work)


for _spec in TREE.values():
    for _queue in _spec["children"]:
        _make_task(_queue)
