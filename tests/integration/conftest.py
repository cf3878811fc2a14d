"""Shared pieces of the integration tests that drive tests/apps/basic.py workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def basic_env(broker: str, namespace: str, conf: dict[str, Any], store: str | None = None) -> dict[str, str]:
    """The environment of a `celery -A tests.apps.basic worker` subprocess."""
    env = {"BASIC_BROKER_URL": broker, "BASIC_NAMESPACE": namespace, "PYTHONPATH": str(ROOT),
           "BASIC_CONF": json.dumps(conf)}
    if store:
        env["BASIC_STORE_URL"] = store
    return env


def plugin_lines(log: str) -> list[str]:
    """The lines the plugin's loggers wrote to a worker's log (every one is structured: ``event=...``)."""
    return [line for line in log.splitlines() if "] event=" in line]


def shed_env(url: str, namespace: str, conf: dict[str, Any]) -> dict[str, str]:
    """The environment of a `celery -A tests.apps.shed_app worker` subprocess (broker and store on ``url``)."""
    return {"SHED_BROKER_URL": url, "SHED_STORE_URL": url, "SHED_NAMESPACE": namespace, "PYTHONPATH": str(ROOT),
            "SHED_CONF": json.dumps(conf)}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test's own database (the tasks count their executions there)."""
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()
