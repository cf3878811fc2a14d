"""``make demo``: run the Prismatic Platform example with a real worker and print the tree.

Uses the Redis at ``PRISMATIC_REDIS_URL`` when it answers, else the embedded
default (Celery's in-memory broker, an in-process store, a solo worker in a
thread), and says which.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def main() -> int:
    url = os.environ.get("PRISMATIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    real = _redis_answers(url)
    if not real:
        os.environ["PRISMATIC_EMBEDDED"] = "1"
    source = f"Redis at {url}" if real else f"the embedded default (no Redis answered at {url})"
    print(f"prismatic-celery demo: using {source}")

    from prismatic_celery.cli import render_tree
    from prismatic_celery.runtime import get_runtime

    from .app import TREE, app

    runtime = get_runtime(app)
    assert runtime is not None
    print(render_tree(runtime.supervisor.describe()))

    started = time.monotonic()
    if real:
        from prismatic_celery.testing import WorkerProcess

        for key in runtime.store.scan(runtime.keys.pattern()):
            runtime.store.delete(key)
        worker = WorkerProcess("examples.prismatic_platform.app", hostname="demo@prismatic", pool="prefork",
                               concurrency=2, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
        worker.start()
        try:
            worker.wait_ready(app)
            _run_round(app, TREE)
        finally:
            worker.stop()
    else:
        from celery.contrib.testing.worker import start_worker

        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            _run_round(app, TREE)
    print(f"demo finished in {time.monotonic() - started:.1f}s")
    return 0


def _run_round(app: object, tree: dict[str, dict[str, object]]) -> None:
    from celery import Celery

    assert isinstance(app, Celery)
    queues = [q for spec in tree.values() for q in spec["children"]]  # type: ignore[attr-defined]
    results = {q: app.tasks[f"platform.{q}"].delay(1) for q in queues}
    for queue, result in results.items():
        value = result.get(timeout=30)
        print(f"  {queue:<22} ok -> {value}")


if __name__ == "__main__":
    sys.exit(main())
