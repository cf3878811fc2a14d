"""CPU per task of plain Celery and of the plugin, both workers running at the same time.

Run: ``python -m benchmarks.side_by_side [--rounds 9] [--tasks 20000] [--quick]``

:mod:`benchmarks.overhead` runs the two variants one after the other. On a shared machine the host has slow
spells of tens of seconds, in which the same work costs more CPU seconds: a spell that covers one run of a pair
and not the other moves that pair's ratio by up to a half, and a 25-pair median by several percent. Here both
variants run together, so a spell covers both: each round fills two queues with ``--tasks`` no-op tasks (the
app of :mod:`benchmarks.apps` in its ``plain`` and ``plugin`` variants, default configuration, each with its own
broker, a private ``redis-server``; the plugin's store is a third), starts both workers (prefork, 2 processes,
Celery's default loglevel; which one starts first alternates by round), and once both have consumed a tenth of
their queue, reads over the same interval, until either queue is down to a tenth:

* each worker's CPU seconds, user + system, of its main process and every pool process, from ``/proc``
  (a pool process that ended meanwhile counts through its parent's ``cutime``/``cstime``), in clock ticks;
* each queue's length: the messages each worker took in the interval (kombu's prefetch, at most 8 here, is
  the only difference from the tasks run).

CPU per task is the worker's CPU seconds over the messages it took; the round's ratio is plugin over plain. The
two workers compete for the machine's cores, each as much as the other; the interval leaves out start-up,
shutdown and idle time (:mod:`benchmarks.overhead` counts those). The worker's main process (the consumer, the
pool's dispatcher, the plugin's admission and background threads) and its pool processes (the tasks) are also
compared apart. Output: one line per round, the median ratio with its 95 % interval
(:func:`benchmarks.overhead.median_interval`) and the median ratio of each part, then one JSON line::

    {"cpu_ratio": median, "cpu_ratio_interval": [low, high], "main_cpu_ratio": median, "pool_cpu_ratio": median,
     "rounds": n, "tasks": n, "plain_cpu_s_per_task": median, "plugin_cpu_s_per_task": median}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery

from benchmarks.apps import NOOP, QUEUE, VARIANTS, make_app
from benchmarks.harness import HOST, ROOT, pythonpath, redis_server
from benchmarks.overhead import children, compile_sources, median_interval
from prismatic_celery.testing import WorkerProcess, wait_for

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of process ``pid`` (every thread), and of its pool: its living children and the
    reaped ones (its ``cutime``/``cstime``)."""

    def fields(stat: str) -> list[str]:
        return Path(stat).read_text(encoding="ascii").rsplit(")", 1)[1].split()

    own = fields(f"/proc/{pid}/stat")
    main = sum(int(own[i]) for i in (11, 12))  # utime, stime
    pool = sum(int(own[i]) for i in (13, 14))  # cutime, cstime
    for child in children(pid):
        try:
            pool += sum(int(v) for v in fields(f"/proc/{child}/stat")[11:13])
        except OSError:  # it ended meanwhile: it is in cutime at the next read
            continue
    return main * TICK_S, pool * TICK_S


@dataclass
class Side:
    """One variant's app, broker and worker in a round."""

    variant: str
    app: Celery
    broker: redis.Redis
    env: dict[str, str]
    worker: WorkerProcess | None = None

    def fill(self, n: int) -> None:
        self.broker.delete(QUEUE)  # what the last round left (our own broker)
        task = self.app.tasks[NOOP]
        with self.app.producer_or_acquire() as producer:
            for i in range(n):
                task.apply_async((i, n, 0), producer=producer)  # no marks: nothing but the task runs

    def left(self) -> int:
        return int(self.broker.llen(QUEUE))

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds of the worker's main process and of its pool processes."""
        assert self.worker is not None and self.worker.proc is not None
        if self.worker.proc.poll() is not None:
            raise SystemExit(f"worker {self.worker.hostname} exited:\n{self.worker.log}")
        return tree_cpu_s(self.worker.proc.pid)


def one_round(sides: Sequence[Side], n: int, index: int) -> list[tuple[float, float]]:
    """CPU seconds per task of each side's main process and pool processes, over the same interval."""
    for side in sides:
        side.fill(n)
    with ExitStack() as stack:
        for side in sides if index % 2 == 0 else reversed(sides):
            side.worker = stack.enter_context(WorkerProcess(
                "benchmarks.apps", hostname=f"{side.variant}-{index}@side", pool="prefork", concurrency=2,
                queues=[QUEUE], extra_args=["--loglevel", "WARNING"], env={**side.env, "BENCH_VARIANT": side.variant},
                cwd=ROOT))
        wait_for(lambda: all(s.left() <= 0.9 * n for s in sides), timeout_s=120, interval_s=0.05,
                 message="both workers consuming")
        before = [(s.cpu_s(), s.left()) for s in sides]
        wait_for(lambda: any(s.left() <= 0.1 * n for s in sides), timeout_s=60 + n / 20, interval_s=0.05,
                 message="one queue down to a tenth")
        after = [(s.cpu_s(), s.left()) for s in sides]
    per_task = []
    for side, ((main0, pool0), left0), ((main1, pool1), left1) in zip(sides, before, after, strict=True):
        if left0 - left1 <= 0:
            raise SystemExit(f"round {index}: the {side.variant} worker took no message in the interval")
        per_task.append(((main1 - main0) / (left0 - left1), (pool1 - pool0) / (left0 - left1)))
    return per_task


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.side_by_side", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds (default 9)")
    parser.add_argument("--tasks", type=int, default=20000, help="no-op tasks per queue and round (default 20000)")
    parser.add_argument("--quick", action="store_true", help="short run for the tests: 1 round of 2000 tasks")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.tasks = 1, 2000
    if args.rounds < 1 or args.tasks < 1000:
        parser.error("--rounds must be >= 1, --tasks >= 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    compile_sources()
    rounds: list[list[tuple[float, float]]] = []  # per round, per variant: (main, pool) CPU seconds per task
    with ExitStack() as stack:
        store_url = f"redis://{HOST}:{stack.enter_context(redis_server('store'))}/0"
        sides = []
        for variant in VARIANTS:
            broker_url = f"redis://{HOST}:{stack.enter_context(redis_server(f'broker-{variant}'))}/0"
            app = make_app(variant, broker_url, store_url=store_url)
            stack.callback(app.close)
            env = {"BENCH_BROKER_URL": broker_url, "BENCH_STORE_URL": store_url, "PYTHONPATH": pythonpath()}
            sides.append(Side(variant, app, redis.Redis.from_url(broker_url), env))
        print(f"prefork -c 2 per worker, plain and plugin side by side, {args.tasks} no-op tasks each per round, "
              f"{args.rounds} rounds; python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        for index in range(args.rounds):
            began = time.monotonic()
            rounds.append(one_round(sides, args.tasks, index))
            (plain_main, plain_pool), (plugin_main, plugin_pool) = rounds[-1]
            plain, plugin = plain_main + plain_pool, plugin_main + plugin_pool
            print(f"round {index + 1:>2}: plain {plain * 1000:.4f} ms/task, plugin {plugin * 1000:.4f} ms/task, "
                  f"ratio {plugin / plain:.3f} (main process {plugin_main / plain_main:.3f}, pool processes "
                  f"{plugin_pool / plain_pool:.3f}; {time.monotonic() - began:.0f} s)", flush=True)
    plain_s = [sum(r[0]) for r in rounds]
    plugin_s = [sum(r[1]) for r in rounds]
    ratios = [b / a for a, b in zip(plain_s, plugin_s, strict=True)]
    low, high = median_interval(ratios)
    median = statistics.median(ratios)
    main_ratio = statistics.median(r[1][0] / r[0][0] for r in rounds)
    pool_ratio = statistics.median(r[1][1] / r[0][1] for r in rounds)
    print(f"CPU per task plugin/plain, median {median:.3f} (95 % interval of the median: {low:.3f} to {high:.3f}); "
          f"main process {main_ratio:.3f}, pool processes {pool_ratio:.3f}")
    print(json.dumps({"cpu_ratio": round(median, 4), "cpu_ratio_interval": [round(low, 4), round(high, 4)],
                      "main_cpu_ratio": round(main_ratio, 4), "pool_cpu_ratio": round(pool_ratio, 4),
                      "rounds": args.rounds, "tasks": args.tasks,
                      "plain_cpu_s_per_task": round(statistics.median(plain_s), 8),
                      "plugin_cpu_s_per_task": round(statistics.median(plugin_s), 8)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
