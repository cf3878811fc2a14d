"""The app of ``benchmarks/learning.py``: one supervised queue, default settings, seven fault patterns.

Every pattern is a real way Celery tasks fail, with the process state that causes it:

* ``blip``: ``ConnectionError`` on a message's first run only. Fixed by any re-run (a quick one is
  fastest); the built-in rule retries with backoff.
* ``stale_redis``: ``redis.ConnectionError`` from a connection pool opened before a failover. Fixed by a
  fresh process; the built-in rule retries with backoff (wrong: a re-run in a stale process fails again).
* ``stale_db``: ``psycopg2.OperationalError`` from a connection opened before a failover. Fixed by a fresh
  process; the built-in rule re-runs with backoff (``restart_child``; wrong for the same reason).
* ``corrupt_cache``: ``pickle.UnpicklingError`` from an in-process cache written before a failover.
  Fixed by a fresh process; no rule (an unknown pattern).
* ``overloaded``: ``RuntimeError('503 Service Unavailable')`` while a dependency takes more than
  :data:`OVERLOAD_RATE` calls a second. Fixed by a re-run a second or so later; no rule.
* ``leak``: ``MemoryError`` once a process has leaked three times. Fixed by a fresh process; the rule
  recycles it.
* ``bug``: ``KeyError('customer_id')``. Nothing fixes it: a dead letter; no rule.

A *failover* (the driver increments ``GENERATION_KEY:<resource>`` for the Redis, the database or
the cache format) makes every process that ran a task before it (it opened its Redis pool and
database connection and filled its cache at its first task) stale for that resource until it is
replaced.
The driver reads what ran from the marks it leaves in its own Redis (keys under ``learn:``).
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

import redis
from celery import Celery

from benchmarks.harness import marks_client

QUEUE = "jobs"
TASK = "learn.job"
PATTERNS = ("blip", "stale_redis", "stale_db", "corrupt_cache", "overloaded", "leak", "bug")
GENERATION_KEY = "learn:generation"  # + ":<resource>": failovers of the Redis, the database, the cache format
RESOURCES = ("redis", "db", "cache")
RUNS_KEY = "learn:runs"  # hash task id -> executions
DONE_KEY = "learn:done"  # hash task id -> 1 when it succeeded
PIDS_KEY = "learn:pids"  # set of the pool processes that ran a task
OVERLOAD_KEY = "learn:overload"  # + ":<second>": calls of the overloaded dependency in that second
OVERLOAD_RATE = 5  # calls per second the overloaded dependency takes (the benchmark offers about 3.6)
LEAK_LIMIT = 3

_process: dict[str, Any] = {}  # this pool process's own state: what it opened and when


class OperationalError(Exception):
    """psycopg2's OperationalError, by its real qualified name (the driver is not installed here)."""


OperationalError.__module__ = "psycopg2"


def _generations(url: str) -> list[int]:
    values = marks_client(url).mget([f"{GENERATION_KEY}:{resource}" for resource in RESOURCES])
    return [int(value or 0) for value in values]


def _stale(url: str, resource: str) -> bool:
    """Whether ``resource`` failed over since this process opened it (at its first task)."""
    born = _process.setdefault("born", _generations(url))
    index = RESOURCES.index(resource)
    return bool(born[index] < _generations(url)[index])


def _fail(pattern: str, url: str, task_id: str, first_run: bool) -> None:
    if pattern == "blip" and first_run:
        raise ConnectionError("connection reset by peer")
    if pattern == "stale_redis" and _stale(url, "redis"):
        raise redis.exceptions.ConnectionError("Error 104 while writing to socket. Connection reset by peer.")
    if pattern == "stale_db" and _stale(url, "db"):
        raise OperationalError("server closed the connection unexpectedly\n\tThis probably means the server "
                               "terminated abnormally before or while processing the request.")
    if pattern == "corrupt_cache" and _stale(url, "cache"):
        pickle.loads(b"\x00not a pickle")  # raises UnpicklingError: the cached bytes are in an old format
    if pattern == "overloaded":
        key = f"{OVERLOAD_KEY}:{int(time.time())}"
        pipe = marks_client(url).pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 5)
        calls = int(pipe.execute()[0])
        if calls > OVERLOAD_RATE:
            raise RuntimeError("upstream returned 503 Service Unavailable")
    if pattern == "leak":
        _process["leaked"] = int(_process.get("leaked", 0)) + 1
        if _process["leaked"] >= LEAK_LIMIT:
            raise MemoryError()
    if pattern == "bug":
        raise KeyError("customer_id")


def make_app(broker_url: str) -> Celery:
    """The plugin with its default settings, one domain, one queue."""
    import prismatic_celery

    app = Celery("learning", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        prismatic_domains={"work": {"children": [QUEUE]}},
    )
    prismatic_celery.install(app)

    @app.task(name=TASK, shared=False, bind=True)
    def job(self: Any, pattern: str) -> None:
        task_id = str(self.request.id)
        runs = int(marks_client(broker_url).hincrby(RUNS_KEY, task_id, 1))
        _process.setdefault("born", _generations(broker_url))
        marks_client(broker_url).sadd(PIDS_KEY, os.getpid())
        if pattern != "healthy":
            _fail(pattern, broker_url, task_id, runs == 1)
        time.sleep(0.005)
        marks_client(broker_url).hset(DONE_KEY, task_id, 1)

    return app


app: Any = make_app(os.environ.get("LEARN_BROKER_URL", "memory://"))
