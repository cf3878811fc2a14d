"""A small supervised app for integration tests; the worker reads its settings from the environment."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import prismatic_celery

DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": [{"queue": "storage", "tasks": ["basic.store*"]}, "cache"]},
    "osint": {"strategy": "one_for_one", "children": [{"queue": "sources", "tasks": ["basic.fetch*"]}]},
}


def make_app(broker_url: str, namespace: str, store_url: str | None = None, **conf: Any) -> Celery:
    """The app as both the test process and the worker build it."""
    app = Celery("basic", broker=broker_url, backend=broker_url, set_as_current=False)
    app.conf.update(
        prismatic_namespace=namespace,
        prismatic_store_url=store_url or broker_url,
        prismatic_domains=DOMAINS,
        prismatic_stats_flush_s=0.2,
        prismatic_reconcile_interval_s=0.2,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=600,
        **conf,
    )
    prismatic_celery.install(app)

    @app.task(name="basic.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="basic.store_item", shared=False)
    def store_item(item: str) -> str:
        return f"stored {item}"

    @app.task(name="basic.fetch_fail", shared=False)
    def fetch_fail(message: str) -> None:
        raise ValueError(message)

    @app.task(name="basic.die", shared=False)
    def die() -> None:
        os._exit(1)

    @app.task(name="basic.slow", shared=False)
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    return app


def _from_env() -> Celery:
    broker = os.environ.get("BASIC_BROKER_URL", "memory://")
    extra = {}
    if os.environ.get("BASIC_EXTRA_SETTING"):
        key, _, value = os.environ["BASIC_EXTRA_SETTING"].partition("=")
        extra[key] = value
    return make_app(broker, os.environ.get("BASIC_NAMESPACE", "basic"), os.environ.get("BASIC_STORE_URL"), **extra)


app = _from_env()
