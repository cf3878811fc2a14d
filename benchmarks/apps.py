"""The benchmark's Celery app, built in two variants chosen by environment variables.

``BENCH_VARIANT=plain`` is plain Celery (``prismatic_celery.install`` is never called);
``BENCH_VARIANT=plugin`` is the same app with the plugin installed in its default
configuration, the benchmark queue supervised by a one-child ``one_for_one`` domain and
the supervision store on its own Redis server (``BENCH_STORE_URL``).

Other variables: ``BENCH_BROKER_URL`` (the broker), ``BENCH_MARKS_URL`` (where the
first and last tasks of a run write their timestamps; not the store).

The task ``bench.noop(i, n, marks)`` does nothing, except that the first ``marks`` and the
last ``marks`` tasks of a run (by publication order) push their start or end time to a
list: ``2 * marks`` Redis writes per run, the same in both variants, none in between.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from benchmarks.harness import marks_client

QUEUE = "bench"
NOOP = "bench.noop"
VARIANTS = ("plain", "plugin")
DOMAINS = {"bench": {"strategy": "one_for_one", "children": [QUEUE]}}
STARTS_KEY = "bench:starts"
ENDS_KEY = "bench:ends"

def make_app(variant: str, broker_url: str, *, store_url: str | None = None, marks_url: str | None = None) -> Celery:
    """The app as both the benchmark driver and its workers build it."""
    if variant not in VARIANTS:
        raise ValueError(f"BENCH_VARIANT must be one of {VARIANTS}, not {variant!r}")
    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    if variant == "plugin":
        import prismatic_celery

        app.conf.update(prismatic_store_url=store_url, prismatic_domains=DOMAINS)
        prismatic_celery.install(app)
    url = marks_url or broker_url

    @app.task(name=NOOP, shared=False)
    def noop(i: int, n: int, marks: int) -> None:
        if i < marks:
            marks_client(url).rpush(STARTS_KEY, repr(time.time()))
        elif i >= n - marks:
            marks_client(url).rpush(ENDS_KEY, repr(time.time()))

    return app


def _from_env() -> Celery:
    return make_app(
        os.environ.get("BENCH_VARIANT", "plain"),
        os.environ.get("BENCH_BROKER_URL", "memory://"),
        store_url=os.environ.get("BENCH_STORE_URL"),
        marks_url=os.environ.get("BENCH_MARKS_URL"),
    )


app: Any = _from_env()
