"""The outage benchmark's Celery app, built in two variants chosen by environment variables.

Both variants run the same task body, ``outage.call_dep(port)``: one call to the dependency
(a line protocol on ``127.0.0.1:<port>``, see :mod:`benchmarks.outage`) that sends the task's
id and reads one answer; anything but ``OK`` raises ``ConnectionError``. On ``OK`` the task
counts its completion per task id in Redis (``OUTAGE_MARKS_URL``, not the plugin's store):
``HINCRBY outage:completions <id> 1`` and ``HSET outage:finished-at <id> <time>``.

``OUTAGE_VARIANT=plain``: plain Celery, what teams do today: ``autoretry_for=(ConnectionError,)``,
``retry_backoff=True`` (1 s doubling per retry, Celery's default ceiling ``retry_backoff_max`` of
600 s), ``retry_jitter=True`` (full jitter: each countdown is uniform in 0..the exponential
value) and ``max_retries=MAX_RETRIES``.

``OUTAGE_VARIANT=plugin``: the same app with ``prismatic_celery.install``, the queue supervised
by a one-child ``one_for_one`` domain, the task declaring ``circuits=["dep"]`` and the breaker
``CIRCUITS["dep"]``; everything else is the plugin's default configuration (its store is the
broker's Redis). No ``autoretry_for``: a failure before the circuit opens is a crash that the
plugin's default remediation re-runs with its backoff; once the circuit is open the task is
deferred (republished for when the circuit may half-open) without calling the dependency.

Other variables: ``OUTAGE_BROKER_URL`` (the broker), ``OUTAGE_MARKS_URL`` (the completion counters).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from celery import Celery

from benchmarks.harness import HOST, marks_client

QUEUE = "outage"
TASK = "outage.call_dep"
VARIANTS = ("plain", "plugin")
COMPLETIONS_KEY = "outage:completions"
FINISHED_KEY = "outage:finished-at"
DOMAINS = {"outage": {"strategy": "one_for_one", "children": [QUEUE]}}
#: Plain Celery's retry budget. With full jitter a 10 s outage costs about 5 retries on average and
#: very rarely more than 10 (countdowns grow as 0..2**n s); 100 cannot be exhausted in any outage this
#: benchmark runs, so no plain task is lost to its retry budget.
MAX_RETRIES = 100
#: The plugin's breaker: open after 3 consecutive failures, one half-open trial every 2 s, strict (once
#: a failure is counted, concurrent callers beyond the failure budget are refused, so no more than
#: fail_max calls reach the dead service before it opens, whatever the concurrency).
CIRCUITS = {"dep": {"fail_max": 3, "reset_timeout_s": 2, "strict": True}}
CALL_TIMEOUT_S = 5.0


def call_dependency(port: int, task_id: str) -> None:
    """One call to the dependency; ``ConnectionError`` unless it answers ``OK``."""
    with socket.create_connection((HOST, port), timeout=CALL_TIMEOUT_S) as conn:
        conn.sendall(f"{task_id}\n".encode())
        answer = conn.makefile().readline().strip()
    if answer != "OK":
        raise ConnectionError(f"dependency answered {answer!r}")


def make_app(variant: str, broker_url: str, *, marks_url: str | None = None) -> Celery:
    """The app as both the benchmark driver and its workers build it."""
    if variant not in VARIANTS:
        raise ValueError(f"OUTAGE_VARIANT must be one of {VARIANTS}, not {variant!r}")
    app = Celery("outage", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    options: dict[str, Any]
    if variant == "plugin":
        import prismatic_celery

        app.conf.update(prismatic_domains=DOMAINS, prismatic_circuits=CIRCUITS)
        prismatic_celery.install(app)
        options = {"circuits": ["dep"]}
    else:
        options = {"autoretry_for": (ConnectionError,), "retry_backoff": True, "retry_jitter": True,
                   "max_retries": MAX_RETRIES}
    url = marks_url or broker_url

    @app.task(name=TASK, shared=False, bind=True, **options)
    def call_dep(self: Any, port: int) -> None:
        task_id = str(self.request.id)
        call_dependency(port, task_id)
        pipe = marks_client(url).pipeline(transaction=False)
        pipe.hincrby(COMPLETIONS_KEY, task_id, 1)
        pipe.hset(FINISHED_KEY, task_id, repr(time.time()))
        pipe.execute()

    return app


def _from_env() -> Celery:
    return make_app(
        os.environ.get("OUTAGE_VARIANT", "plain"),
        os.environ.get("OUTAGE_BROKER_URL", "memory://"),
        marks_url=os.environ.get("OUTAGE_MARKS_URL"),
    )


app: Any = _from_env()
