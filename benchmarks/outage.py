"""A dependency outage: plain Celery's retries vs prismatic-celery's shared circuit breaker.

Run: ``python -m benchmarks.outage [--tasks 200] [--down-s 10] [--workers 2] [--concurrency 2] [--quick]``

Setup. One private ``redis-server`` on a free port of 127.0.0.1, started and stopped here:
the broker (db 0, also the plugin's store, as in the plugin's default configuration) and the
completion counters (db 1); both databases are flushed before each run (this server only). The
dependency is a line-protocol TCP server on 127.0.0.1 run by this script: every call sends a task
id and gets ``OK``, or ``ERR`` while the service is down; it counts every call, per task id,
while down and while up. The app is :mod:`benchmarks.outage_apps`, the same task body in both
variants:

* ``plain``: ``autoretry_for=(ConnectionError,)``, ``retry_backoff=True``, ``retry_jitter=True``,
  ``max_retries=100`` (Celery's default ``retry_backoff_max`` of 600 s);
* ``plugin``: ``prismatic_celery.install``, the queue supervised (one-child ``one_for_one``
  domain), the task declaring ``circuits=["dep"]`` with the breaker ``fail_max=3``,
  ``reset_timeout_s=2``, ``strict=True``; every other setting is the plugin's default.

Each run (plain first, then plugin) starts ``--workers`` real ``celery worker`` subprocesses
(prefork, ``-c --concurrency``, ``-Q outage``, Celery's default prefetch and early acks), waits
until they answer a ping, takes the service down, publishes ``--tasks`` tasks at once, brings
the service back ``--down-s`` seconds after it went down, and waits until every task has
completed and the broker holds no message (queue and unacked ETA messages both empty), or
``--drain-timeout`` seconds after the return. Measured from the worker side: each task counts
its completions per task id in Redis and stamps its completion time.

Reported per variant: calls that reached the dead service (and how many tasks made them),
calls after the return, tasks lost (never completed), tasks run twice (completed more than once),
and the drain time (last completion minus the service's return). Then one JSON line::

    {"calls_ratio": <plain calls to the dead service / plugin calls>, "lost": <plugin lost>,
     "duplicates": <plugin run twice>, "drain_ratio": <plugin drain / plain drain>,
     "plain_calls": n, "plugin_calls": n, "plain_drain_s": x, "plugin_drain_s": y,
     "plain_lost": n, "plain_duplicates": n}
"""

from __future__ import annotations

import argparse
import json
import os
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from benchmarks.harness import HOST, ROOT, check_alive, pythonpath, redis_server, start_all
from benchmarks.outage_apps import CIRCUITS, COMPLETIONS_KEY, FINISHED_KEY, MAX_RETRIES, QUEUE, TASK, make_app
from prismatic_celery.testing import WorkerProcess, wait_for

VARIANTS = ("plain", "plugin")
UNACKED_KEY = "unacked"  # kombu's Redis transport: messages delivered but not acknowledged (ETA ones included)


# the dependency ----------------------------------------------------------------------------
class Dependency(socketserver.ThreadingTCPServer):
    """A line-protocol service on 127.0.0.1: reads a task id, answers ``OK`` (``ERR`` while down), counts."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.down = False
        self.lock = threading.Lock()
        self.calls_down: Counter[str] = Counter()
        self.calls_up: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def set_down(self, down: bool) -> None:
        with self.lock:
            self.down = down


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, Dependency)
        caller = self.rfile.readline().decode(errors="replace").strip()
        with server.lock:
            down = server.down
            (server.calls_down if down else server.calls_up)[caller] += 1
        self.wfile.write(b"ERR\n" if down else b"OK\n")


# one run -----------------------------------------------------------------------------------
@dataclass
class Run:
    variant: str
    tasks: int
    down_s: float
    calls_down: int
    callers_down: int
    max_calls_per_task: int
    calls_up: int
    completed: int
    lost: int
    duplicates: int
    drain_s: float
    seconds: float
    log_counts: dict[str, int]

    def line(self) -> str:
        logged = ", ".join(f"{k} {v}" for k, v in self.log_counts.items())
        return (f"{self.variant:<6}: {self.tasks} tasks, {self.down_s:g} s outage: "
                f"{self.calls_down} calls hit the dead service ({self.callers_down} tasks called it, "
                f"at most {self.max_calls_per_task} each), {self.calls_up} calls after its return; "
                f"lost {self.lost}, run twice {self.duplicates}; drained {self.drain_s:.2f} s after the return"
                f" [{logged}; run {self.seconds:.1f} s]")


@dataclass
class Bench:
    apps: dict[str, Celery]
    env: dict[str, str]
    broker: redis.Redis
    marks: redis.Redis
    workers: int
    concurrency: int
    drain_timeout_s: float

    def publish(self, app: Celery, n: int, port: int) -> list[str]:
        task = app.tasks[TASK]
        with app.producer_or_acquire() as producer:
            return [str(task.apply_async((port,), producer=producer).id) for _ in range(n)]

    def run(self, variant: str, n: int, down_s: float) -> Run:
        began = time.monotonic()
        self.broker.flushdb()  # this script's own redis-server only
        self.marks.flushdb()
        app = self.apps[variant]
        dependency = Dependency()
        serving = threading.Thread(target=dependency.serve_forever, daemon=True)
        serving.start()
        workers = [
            WorkerProcess("benchmarks.outage_apps", hostname=f"{variant}-{i + 1}@outage", pool="prefork",
                          concurrency=self.concurrency, queues=[QUEUE], env={**self.env, "OUTAGE_VARIANT": variant},
                          cwd=ROOT)
            for i in range(self.workers)
        ]
        try:
            with ExitStack() as stack:
                start_all(stack, workers, app)

                def alive() -> None:
                    check_alive(workers)

                dependency.set_down(True)
                went_down = time.time()
                ids = self.publish(app, n, dependency.port)
                while time.time() < went_down + down_s:  # the outage itself is the scenario
                    alive()
                    time.sleep(min(0.1, max(0.0, went_down + down_s - time.time())))
                dependency.set_down(False)
                came_back = time.time()

                def drained() -> bool:
                    alive()
                    return (int(self.marks.hlen(COMPLETIONS_KEY)) >= n and int(self.broker.llen(QUEUE)) == 0
                            and int(self.broker.hlen(UNACKED_KEY)) == 0)

                try:
                    wait_for(drained, timeout_s=self.drain_timeout_s, interval_s=0.05,
                             message=f"{n} tasks to complete on {variant}")
                except AssertionError as exc:
                    print(f"  note: {exc}", flush=True)
                time.sleep(1.0)  # anything still running twice would show up now
                for worker in workers:
                    worker.stop()
            completions = {str(k): int(v) for k, v in self.marks.hgetall(COMPLETIONS_KEY).items()}
            finished = [float(v) for v in self.marks.hvals(FINISHED_KEY)]
            strangers = set(completions) - set(ids)
            if strangers:
                raise SystemExit(f"{variant}: completions of unknown task ids {sorted(strangers)[:5]}")
            with dependency.lock:
                calls_down, calls_up = dependency.calls_down.copy(), dependency.calls_up.copy()
            logs = "".join(worker.log for worker in workers)
            log_counts = {
                "retries logged": logs.count(" retry: "),
                "deferrals logged": logs.count("supervision-deferred"),
                "circuit changes logged": logs.count("circuit-state-changed"),
            }
            if variant == "plain":
                del log_counts["deferrals logged"], log_counts["circuit changes logged"]
            lost = sum(1 for i in ids if completions.get(i, 0) == 0)
            result = Run(
                variant=variant, tasks=n, down_s=down_s,
                calls_down=sum(calls_down.values()), callers_down=len(calls_down),
                max_calls_per_task=max(calls_down.values(), default=0), calls_up=sum(calls_up.values()),
                completed=sum(1 for i in ids if completions.get(i, 0) > 0), lost=lost,
                duplicates=sum(1 for c in completions.values() if c > 1),
                drain_s=max(0.0, max(finished, default=came_back) - came_back),
                seconds=time.monotonic() - began, log_counts=log_counts,
            )
            for worker in workers:  # a run that went well leaves no log behind
                Path(worker._log.name).unlink(missing_ok=True)
            return result
        finally:
            dependency.shutdown()
            dependency.server_close()


# driver --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks published at the start of the outage (200)")
    parser.add_argument("--down-s", type=float, default=10.0, help="seconds the dependency is down (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool processes per worker (default 2)")
    parser.add_argument("--drain-timeout", type=float, default=150.0,
                        help="seconds after the return before unfinished tasks count as lost (default 150)")
    parser.add_argument("--quick", action="store_true", help="short run for the tests: 40 tasks, 3 s outage")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.down_s = 40, 3.0
    if args.tasks < 1 or args.down_s <= 0 or args.workers < 1 or args.concurrency < 1 or args.drain_timeout <= 0:
        parser.error("--tasks, --workers and --concurrency must be >= 1, --down-s and --drain-timeout > 0")
    return args


def summarize(plain: Run, plugin: Run) -> dict[str, Any]:
    calls_ratio = plain.calls_down / max(plugin.calls_down, 1)
    drain_ratio = plugin.drain_s / plain.drain_s if plain.drain_s > 0 else float("inf")
    print(f"{'':<28}{'plain':>10}{'plugin':>10}")
    for label, a, b in (
        ("calls to the dead service", plain.calls_down, plugin.calls_down),
        ("calls after its return", plain.calls_up, plugin.calls_up),
        ("tasks lost", plain.lost, plugin.lost),
        ("tasks run twice", plain.duplicates, plugin.duplicates),
        ("drain after return (s)", f"{plain.drain_s:.2f}", f"{plugin.drain_s:.2f}"),
    ):
        print(f"{label:<28}{a:>10}{b:>10}")
    checks = {
        f"calls_ratio {calls_ratio:.1f} >= 50": calls_ratio >= 50,
        f"plugin lost {plugin.lost} == 0": plugin.lost == 0,
        f"plugin run twice {plugin.duplicates} == 0": plugin.duplicates == 0,
        f"drain_ratio {drain_ratio:.3f} <= 1.0": drain_ratio <= 1.0,
    }
    print("targets: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in checks.items()))
    return {
        "calls_ratio": round(calls_ratio, 2),
        "lost": plugin.lost,
        "duplicates": plugin.duplicates,
        "drain_ratio": round(drain_ratio, 4),
        "plain_calls": plain.calls_down,
        "plugin_calls": plugin.calls_down,
        "plain_drain_s": round(plain.drain_s, 3),
        "plugin_drain_s": round(plugin.drain_s, 3),
        "plain_lost": plain.lost,
        "plain_duplicates": plain.duplicates,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    with ExitStack() as stack:
        broker_port = stack.enter_context(redis_server("broker"))
        broker_url, marks_url = f"redis://{HOST}:{broker_port}/0", f"redis://{HOST}:{broker_port}/1"
        apps = {v: make_app(v, broker_url, marks_url=marks_url) for v in VARIANTS}
        for app in apps.values():
            stack.callback(app.close)
        env = {"OUTAGE_BROKER_URL": broker_url, "OUTAGE_MARKS_URL": marks_url, "PYTHONPATH": pythonpath()}
        marks = redis.Redis.from_url(marks_url, decode_responses=True)
        bench = Bench(apps, env, redis.Redis.from_url(broker_url), marks, args.workers, args.concurrency,
                      args.drain_timeout)
        print(f"{args.tasks} tasks published at the start of a {args.down_s:g} s outage; {args.workers} workers x "
              f"prefork -c {args.concurrency}; broker :{broker_port}; plain: autoretry_for=(ConnectionError,), "
              f"retry_backoff, retry_jitter, max_retries={MAX_RETRIES}; plugin: circuits=['dep'] {CIRCUITS['dep']}; "
              f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        runs: dict[str, Run] = {}
        for variant in VARIANTS:
            runs[variant] = bench.run(variant, args.tasks, args.down_s)
            print(runs[variant].line(), flush=True)
        result = summarize(runs["plain"], runs["plugin"])
        print(f"total time {time.monotonic() - began:.1f} s")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
