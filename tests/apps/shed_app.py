"""A supervised app for the bulkhead and load-shedding integration tests.

The worker builds it from the environment: ``SHED_BROKER_URL``, ``SHED_STORE_URL``,
``SHED_NAMESPACE`` and ``SHED_CONF`` (JSON settings). Queue names are derived
from the namespace (``<ns>-bulk``, ``<ns>-slow``, ``<ns>-fast``) so concurrent
tests never share a queue. Tasks count their own executions in the store's
Redis (``<ns>:runs`` hash, one field per key), so a test proves that nothing
ran twice or was lost.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery

import prismatic_celery

_clients: dict[str, redis.Redis] = {}

# INCR the running counter and keep its maximum, atomically.
_ENTER = """
local n = redis.call('INCR', KEYS[1])
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > top then redis.call('SET', KEYS[2], n) end
return n
"""


def client(url: str) -> redis.Redis:
    """One plain client per process and URL, for the tasks' own bookkeeping."""
    key = f"{os.getpid()}:{url}"
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, decode_responses=True)
    return _clients[key]


def queues(namespace: str) -> dict[str, str]:
    """The test queues of ``namespace``."""
    return {"bulk": f"{namespace}-bulk", "slow": f"{namespace}-slow", "fast": f"{namespace}-fast"}


def make_app(broker_url: str, store_url: str, namespace: str, **conf: Any) -> Celery:
    """The app as both the test process and the worker build it."""
    names = queues(namespace)
    app = Celery("shed_app", broker=broker_url, set_as_current=False)
    settings: dict[str, Any] = {
        "prismatic_namespace": namespace,
        "prismatic_store_url": store_url,
        "prismatic_domains": {
            "bulk": {"children": [names["bulk"]]},
            "slow": {"children": [names["slow"]], "concurrency": 2},
            "fast": {"children": [names["fast"]]},
        },
        "prismatic_stats_flush_s": 0.5,
        "prismatic_reconcile_interval_s": 0.5,
        "prismatic_send_events": False,
        "task_acks_late": True,
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
    }
    settings.update(conf)
    app.conf.update(settings)
    prismatic_celery.install(app)
    runs = f"{namespace}:runs"

    @app.task(name="shed.record", shared=False)
    def record(key: str) -> str:
        """Counts one execution of ``key``."""
        client(store_url).hincrby(runs, key, 1)
        return key

    @app.task(name="shed.hang", shared=False)
    def hang(key: str, domain: str, timeout_s: float = 30.0) -> str:
        """Holds a slot until the test pushes to ``<ns>:release`` (or ``timeout_s``), counting concurrency."""
        r = client(store_url)
        r.eval(_ENTER, 2, f"{namespace}:running:{domain}", f"{namespace}:max:{domain}")
        try:
            r.blpop([f"{namespace}:release"], timeout=timeout_s)
        finally:
            r.decr(f"{namespace}:running:{domain}")
        r.hincrby(runs, key, 1)
        return key

    return app


def _from_env() -> Celery:
    broker = os.environ.get("SHED_BROKER_URL", "memory://")
    return make_app(broker, os.environ.get("SHED_STORE_URL", "memory://"), os.environ.get("SHED_NAMESPACE", "shed"),
                    **json.loads(os.environ.get("SHED_CONF", "{}")))


app = _from_env()
