"""A small supervised app for integration tests; the worker reads its settings from the environment.

``BASIC_CONF`` (JSON) overrides settings, so one module serves every scenario.
Tasks count their own executions in the broker's Redis database, so tests can
prove that nothing was lost or run twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import redis
from celery import Celery

import prismatic_celery
import prismatic_celery.runtime

DOMAINS = {
    "core": {"strategy": "rest_for_one",
             "children": [{"queue": "storage", "tasks": ["basic.store*"]}, "cache", "telemetry"]},
    "osint": {"strategy": "one_for_one",
              "children": [{"queue": "sources", "tasks": ["basic.fetch*"]}, "monitor"]},
    "evo": {"strategy": "one_for_all", "children": ["mendel", "fitness"]},
}

_clients: dict[str, redis.Redis] = {}


def counter(url: str) -> redis.Redis:
    """A plain client on the broker's database, for the tasks' own bookkeeping."""
    key = f"{os.getpid()}:{url}"
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, decode_responses=True)
    return _clients[key]


def make_app(broker_url: str, namespace: str, store_url: str | None = None, **conf: Any) -> Celery:
    """The app as both the test process and the worker build it."""
    app = Celery("basic", broker=broker_url, backend=broker_url, set_as_current=False)
    settings: dict[str, Any] = {
        "prismatic_namespace": namespace,
        "prismatic_store_url": store_url or broker_url,
        "prismatic_domains": DOMAINS,
        "prismatic_circuits": {"dep": {"fail_max": 3, "reset_timeout_s": 2, "strict": True}},
        "prismatic_stats_flush_s": 0.2,
        "prismatic_reconcile_interval_s": 0.2,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "result_expires": 600,
    }
    settings.update(conf)
    app.conf.update(settings)
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

    @app.task(name="basic.flaky", shared=False)
    def flaky(key: str, fails: int) -> int:
        """Fails the first ``fails`` executions for ``key``; returns the attempt that succeeded."""
        attempt = int(counter(broker_url).incr(f"attempts:{key}"))
        if attempt <= fails:
            raise ConnectionError(f"dependency down for {key} (attempt {attempt})")
        counter(broker_url).incr(f"runs:{key}")
        return attempt

    @app.task(name="basic.record", shared=False)
    def record(key: str) -> str:
        """Counts one successful execution of ``key``."""
        counter(broker_url).incr(f"runs:{key}")
        counter(broker_url).rpush("order", key)
        return key

    @app.task(name="basic.fetch_eta", shared=False, bind=True)
    def fetch_eta(self: Any, key: str) -> None:
        """Always fails like a dead dependency; records each execution's start time and ETA."""
        counter(broker_url).rpush(f"eta:{key}", json.dumps(
            {"retries": self.request.retries, "reruns": prismatic_celery.reruns(self.request), "eta": self.request.eta,
             "started": time.time()}))
        raise ConnectionError(f"dependency down for {key}")

    @app.task(name="basic.poison", shared=False)
    def poison(key: str) -> None:
        """Kills the pool process running it (a crash loop if redelivered forever)."""
        counter(broker_url).incr(f"runs:{key}")
        os._exit(1)

    @app.task(name="basic.fragile", shared=False)
    def fragile(key: str) -> str:
        """Fails with an unknown exception until the flag ``fixed:<key>`` is set."""
        if not counter(broker_url).get(f"fixed:{key}"):
            raise LookupError(f"inconsistent record {key}")
        counter(broker_url).incr(f"runs:{key}")
        return key

    @app.task(name="basic.call_dep", shared=False, circuits=["dep"])
    def call_dep(port: int, key: str) -> str:
        """Calls the test's dependency on 127.0.0.1:<port>; an error answer is a dependency failure."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"{key}\n".encode())
            answer = conn.makefile().readline().strip()
        if answer != "OK":
            raise ConnectionError(f"dependency answered {answer!r}")
        counter(broker_url).incr(f"runs:{key}")
        return key

    @app.task(name="basic.autoretry", shared=False, bind=True, autoretry_for=(ConnectionError,), max_retries=3,
              retry_kwargs={"countdown": 0.1})
    def autoretry(self: Any, key: str, fails: int) -> int:
        """Celery's own retries: fails the first ``fails`` executions; records each execution's retry counts."""
        client = counter(broker_url)
        client.rpush(f"executions:{key}", json.dumps({"retries": self.request.retries,
                                                      "reruns": prismatic_celery.reruns(self.request)}))
        if int(client.incr(f"attempts:{key}")) <= fails:
            raise ConnectionError(f"dependency down for {key}")
        client.incr(f"runs:{key}")
        return int(self.request.retries)

    @app.task(name="basic.stamp", shared=False)
    def stamp(key: str) -> float:
        """Records when it ran (``ran:<key>``, seconds since the epoch)."""
        now = time.time()
        counter(broker_url).set(f"ran:{key}", repr(now))
        counter(broker_url).incr(f"runs:{key}")
        return now

    @app.task(name="basic.pid", shared=False)
    def pid() -> int:
        return os.getpid()

    @app.task(name="basic.slot", shared=False)
    def slot() -> str | None:
        """What the shared running slot of this pool process says it runs (its own id, under prefork)."""
        from billiard.process import current_process

        from prismatic_celery.worker.state import worker_state

        state = worker_state(app)
        index = getattr(current_process(), "index", None)
        if state is None or state.slots is None or index is None:
            return None
        return state.slots.running(index)

    return app


def _from_env() -> Celery:
    broker = os.environ.get("BASIC_BROKER_URL", "memory://")
    extra = json.loads(os.environ.get("BASIC_CONF", "{}"))
    return make_app(broker, os.environ.get("BASIC_NAMESPACE", "basic"), os.environ.get("BASIC_STORE_URL"), **extra)


app = _from_env()
