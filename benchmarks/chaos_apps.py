"""The chaos benchmark's Celery app, built in two variants chosen by environment variables.

Three queues, one task each, the same task bodies in both variants (see :mod:`benchmarks.chaos`):

* ``chaos.orders(port, transient)`` on ``orders``: one call to the dependency (the line protocol of
  :func:`benchmarks.outage_apps.call_dependency` on ``127.0.0.1:<port>``; ``ConnectionError`` unless it
  answers ``OK``). A ``transient`` message's first execution raises ``ConnectionError("connection
  reset")`` before calling anything; later executions behave normally.
* ``chaos.reports()`` on ``reports``: healthy, a 10-20 ms sleep.
* ``chaos.sources(kind)`` on ``sources``: ``healthy`` (a 10-20 ms sleep), ``logic`` (raises
  ``ValueError`` every time) or ``poison`` (kills its pool process with ``os._exit(1)`` every time).

Every execution of a body records what happened to its message, by task id, in Redis
(``CHAOS_MARKS_URL``, not the plugin's store): ``HINCRBY chaos:runs <id> 1`` first (so a poison
message's runs are counted before it dies); a ``ValueError`` about to be raised, ``HINCRBY
chaos:raised <id> 1``; a completion, ``HINCRBY chaos:done <id> 1`` and ``HSETNX chaos:done-at <id>
<time>`` (the first completion's time); a poison message about to die, ``RPUSH chaos:poison-runs:<id>
"<worker hostname> <time>"``.

Settings common to both variants: ``task_acks_late``, ``task_reject_on_worker_lost``,
``worker_prefetch_multiplier=1``, the routes above, and the Redis transport options of
:func:`transport_options` (visibility timeout ``CHAOS_VISIBILITY_S``, restore sweep every second).

``CHAOS_VARIANT=plain``: plain Celery. ``chaos.orders`` has ``autoretry_for=(ConnectionError,)``,
``retry_backoff=True``, ``retry_jitter=True``, ``max_retries=MAX_RETRIES`` and
``retry_backoff_max=RETRY_BACKOFF_MAX_S``: Celery's documentation warns that with the Redis broker a
countdown longer than the visibility timeout makes the message be delivered again while a worker
still holds it, so a careful configuration keeps every countdown below it.

``CHAOS_VARIANT=plugin``: the same app with ``prismatic_celery.install``, the tree :data:`DOMAINS`,
the breaker :data:`CIRCUITS` (the breaker's defaults; ``--quick``: :data:`QUICK_CIRCUITS`) declared by
``chaos.orders`` (``circuits=["dep"]``) and no autoretry;
every other ``prismatic_*`` setting is the plugin's default (its store is the broker's Redis).

Other variables: ``CHAOS_BROKER_URL`` (the broker), ``CHAOS_MARKS_URL`` (the marks), ``CHAOS_VISIBILITY_S``,
``CHAOS_QUICK`` (``1``: the quick run's breaker).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from celery import Celery

from benchmarks.harness import marks_client
from benchmarks.outage_apps import call_dependency

VARIANTS = ("plain", "plugin")
ORDERS, REPORTS, SOURCES = "orders", "reports", "sources"
QUEUES = (ORDERS, REPORTS, SOURCES)
ORDERS_TASK, REPORTS_TASK, SOURCES_TASK = "chaos.orders", "chaos.reports", "chaos.sources"
ROUTES = {ORDERS_TASK: {"queue": ORDERS}, REPORTS_TASK: {"queue": REPORTS}, SOURCES_TASK: {"queue": SOURCES}}
RUNS_KEY, RAISED_KEY, DONE_KEY, DONE_AT_KEY = "chaos:runs", "chaos:raised", "chaos:done", "chaos:done-at"
POISON_RUNS_KEY = "chaos:poison-runs"  # + ":<id>": one '<worker hostname> <time>' per run of a poison message
#: The tree: ``reports`` is declared after ``orders`` in a ``rest_for_one`` domain (it depends on it).
DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": [ORDERS, REPORTS]},
    "osint": {"strategy": "one_for_one", "children": [SOURCES]},
}
#: The dependency ``chaos.orders`` calls, declared to the plugin with the breaker's defaults (``fail_max`` 5,
#: ``reset_timeout_s`` 30, not strict): nothing about the breaker is tuned to the scenario.
CIRCUITS: dict[str, dict[str, Any]] = {"dep": {}}
#: ``--quick`` only: one trial call every 2 s and strict, so a circuit deferral (its countdown is the reset
#: timeout) stays below the quick run's short visibility timeout.
QUICK_CIRCUITS: dict[str, dict[str, Any]] = {"dep": {"fail_max": 3, "reset_timeout_s": 2, "strict": True}}
#: Plain Celery's retry budget: a 10 s outage costs about 5 retries; 10 is never exhausted in this run.
MAX_RETRIES = 10
#: Plain Celery's largest countdown (full jitter: each is uniform in 0..min(2**retries, this)), kept
#: below the visibility timeout; 16 s is also the longest backoff the plugin's defaults reach (its
#: fifth and last re-run waits 16 s plus up to 1 s of jitter).
RETRY_BACKOFF_MAX_S = 16
VISIBILITY_S = 60


def transport_options(visibility_s: int) -> dict[str, int]:
    """Kombu's Redis transport options, the same in both variants.

    A message delivered and not acknowledged (its worker was SIGKILLed) is put back on its queue once
    it is ``visibility_s`` old (kombu's default is one hour); the sweep runs every second.
    """
    return {"visibility_timeout": visibility_s, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


def _work() -> None:
    time.sleep(random.uniform(0.010, 0.020))


def make_app(variant: str, broker_url: str, *, marks_url: str | None = None, visibility_s: int = VISIBILITY_S,
             quick: bool = False) -> Celery:
    """The app as both the benchmark driver and its workers build it."""
    if variant not in VARIANTS:
        raise ValueError(f"CHAOS_VARIANT must be one of {VARIANTS}, not {variant!r}")
    app = Celery("chaos", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_routes=ROUTES,
        task_default_queue=REPORTS,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport_options(visibility_s),
        broker_connection_retry_on_startup=True,
    )
    orders_options: dict[str, Any]
    if variant == "plugin":
        import prismatic_celery

        app.conf.update(prismatic_domains=DOMAINS, prismatic_circuits=QUICK_CIRCUITS if quick else CIRCUITS)
        prismatic_celery.install(app)
        orders_options = {"circuits": ["dep"]}
    else:
        orders_options = {"autoretry_for": (ConnectionError,), "retry_backoff": True, "retry_jitter": True,
                          "max_retries": MAX_RETRIES, "retry_backoff_max": RETRY_BACKOFF_MAX_S}
    url = marks_url or broker_url

    def ran(task_id: str) -> int:
        return int(marks_client(url).hincrby(RUNS_KEY, task_id, 1))

    def done(task_id: str) -> None:
        pipe = marks_client(url).pipeline(transaction=False)
        pipe.hincrby(DONE_KEY, task_id, 1)
        pipe.hsetnx(DONE_AT_KEY, task_id, repr(time.time()))
        pipe.execute()

    @app.task(name=ORDERS_TASK, shared=False, bind=True, **orders_options)
    def orders(self: Any, port: int, transient: bool) -> None:
        task_id = str(self.request.id)
        if ran(task_id) == 1 and transient:
            raise ConnectionError("connection reset")
        call_dependency(port, task_id)
        done(task_id)

    @app.task(name=REPORTS_TASK, shared=False, bind=True)
    def reports(self: Any) -> None:
        task_id = str(self.request.id)
        ran(task_id)
        _work()
        done(task_id)

    @app.task(name=SOURCES_TASK, shared=False, bind=True)
    def sources(self: Any, kind: str) -> None:
        task_id = str(self.request.id)
        ran(task_id)
        if kind == "poison":
            marks_client(url).rpush(f"{POISON_RUNS_KEY}:{task_id}", f"{self.request.hostname} {time.time()!r}")
            os._exit(1)  # the pool process dies with the message
        if kind == "logic":
            marks_client(url).hincrby(RAISED_KEY, task_id, 1)
            raise ValueError(f"source record {task_id} has no 'published' field")
        _work()
        done(task_id)

    return app


def _from_env() -> Celery:
    return make_app(
        os.environ.get("CHAOS_VARIANT", "plain"),
        os.environ.get("CHAOS_BROKER_URL", "memory://"),
        marks_url=os.environ.get("CHAOS_MARKS_URL"),
        visibility_s=int(os.environ.get("CHAOS_VISIBILITY_S", VISIBILITY_S)),
        quick=os.environ.get("CHAOS_QUICK") == "1",
    )


app: Any = _from_env()
