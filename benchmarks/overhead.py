"""Overhead of prismatic-celery on no-op tasks: plugin fully enabled vs plain Celery.

Run: ``python -m benchmarks.overhead [--pairs 7] [--tasks 5000] [--concurrency 2] [--quick]``

Setup. Two private ``redis-server`` processes on free ports of 127.0.0.1, started and
stopped here: one is the broker (db 0) and holds the run marks (db 1), the other is
only the plugin's supervision store. The app is :mod:`benchmarks.apps`: the same code in
both variants, ``plain`` (``install`` never called) and ``plugin`` (installed, default
configuration, its queue supervised by a one-child ``one_for_one`` domain). Workers are
real ``celery worker`` subprocesses, prefork pool, ``-Q bench``, Celery's default
loglevel (WARNING) so per-task log lines do not dilute the comparison.

Runs come in pairs, one of each variant (``--pairs`` pairs after one discarded, shorter warm-up
pair): half the pairs run plain first, half plugin first, so a steady drift of the shared machine's
speed over the benchmark favours neither variant, and the two orders are shuffled (``--seed``), so a
slow spell of the host that recurs every few runs cannot fall on one variant's runs each time (a
strict A B B A alternation once put four of a 25-pair run's five slowest runs in the plugin's place,
three of them four runs apart). Each run:

1. publishes all N ``bench.noop`` tasks to the queue while no worker is running (the
   publisher is never timed, and never competes with the worker for the CPUs);
2. starts a fresh worker for the variant (``BENCH_VARIANT``) and waits until the queue is
   drained and the last tasks have reported;
3. measures on the worker side: the first ``marks`` tasks (by publication order) push
   their start time to a list, the last ``marks`` push their end time, every other task
   does nothing at all. Throughput = N / (last end - first start): worker start-up and
   shutdown are outside the interval, the publisher is outside it, and the measurement
   costs 2 * ``marks`` Redis writes per run, identical in both variants (no result
   backend, no per-task counter);
4. for the plugin, waits until the plugin's own counters (``prismatic:{bench}:stats:<host>``,
   flushed every ``prismatic_stats_flush_s``) show every task succeeded, stops the worker
   (warm shutdown), and reads ``INFO commandstats`` of the store server before publishing
   and after the worker exited. The difference, minus the commands of this script's own
   reads (one INFO and the counter polls, counted exactly), is everything the plugin
   sent for the run: producer side, worker boot, registration heartbeats, counter flushes
   and shutdown. Divided by the successful tasks it gives ``redis_cmds_per_task`` (an
   upper bound of the per-task cost, as the per-run fixed costs are included);
5. CPU seconds (user + system) of the worker's whole process tree, from the kernel's
   accounting: this script is the worker's parent and a child subreaper, so once the worker
   has exited and been reaped, the delta of ``getrusage(RUSAGE_CHILDREN)`` across the run
   holds the worker and every pool process it reaped in its warm shutdown. The Redis servers
   live through every run and nothing else is spawned; a process that outlived its worker
   (handed to this script as an orphan, its CPU not in the delta) stops the benchmark.
   Divided by N it gives the CPU seconds per task, worker start-up and shutdown included
   (about 0.5 s per run in either variant on the project's machine) and the same idle time in
   both: every worker lives ``SETTLE_S`` (6 s) after its queue drained, time in which the
   plugin's counters are flushed.

Then the failure path: store round trips per failed execution with lessons on (the default),
counted on the wire to the store's server (each ``send_packed_command`` of a connection to it: a
pipeline is one round trip), for ``--crashes`` failures of each kind, through the engine's real
``on_crash`` in this process (the republish to the broker is left out): a re-run
(``ConnectionError``: the default network rule) and a dead letter (``ValueError``: an unknown
pattern, after the pattern's one escalation).

Output: one line per run, a summary, then one JSON line::

    {"overhead_ratio": <median of plugin/plain per pair>, "redis_cmds_per_task": <sum of
     plugin store commands / sum of successful tasks>, "pairs": n, "tasks": n,
     "plain_tasks_per_s": median, "plugin_tasks_per_s": median,
     "cpu_ratio": <median of plugin/plain CPU seconds per task per pair>,
     "plain_cpu_s_per_task": median, "plugin_cpu_s_per_task": median,
     "overhead_ratio_interval": [low, high], "cpu_ratio_interval": [low, high],
     "crash_round_trips": <the largest mean of the failure kinds>}

Each ``*_interval`` bounds the median ratio above it at 95 % or more, free of any assumption on the
pairs' distribution (:func:`median_interval`): with 15 pairs the 4th and the 12th smallest ratios.
A limit inside the interval is not shown met or missed by the run; the machine's noise decides.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import ctypes
import json
import logging
import math
import os
import random
import resource
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

import redis
from celery import Celery

from benchmarks.apps import ENDS_KEY, NOOP, QUEUE, STARTS_KEY, make_app
from benchmarks.harness import HOST, ROOT, pythonpath, redis_server
from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for


# store command accounting ----------------------------------------------------------------
class StoreMeter:
    """Counts the commands a Redis server processed, minus the ones this meter sent itself.

    One persistent connection: its handshake happens before the first snapshot, and each
    later call is exactly one command, recorded in ``own``.
    """

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.own: Counter[str] = Counter()
        self.client.ping()

    def snapshot(self) -> Counter[str]:
        stats = self.client.info("commandstats")
        self.own["info"] += 1  # counted by the server once it has answered: in the next snapshot
        return Counter({name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()})

    def hget(self, key: str, field_name: str) -> str | None:
        self.own["hget"] += 1
        value = self.client.hget(key, field_name)
        return None if value is None else str(value)

    def delta(self, before: Counter[str], after: Counter[str], own_before: Counter[str]) -> Counter[str]:
        """Commands processed between two snapshots that this meter did not send."""
        mine = self.own.copy()
        mine.subtract(own_before)
        mine["info"] -= 1  # the INFO of ``after`` is not in ``after`` yet
        diff = after.copy()
        diff.subtract(before)
        diff.subtract(mine)
        return Counter({k: v for k, v in diff.items() if v})

    def calibrate(self) -> None:
        """Two snapshots with nothing in between must differ by nothing but this meter."""
        own = self.own.copy()
        first = self.snapshot()
        leftover = self.delta(first, self.snapshot(), own)
        if leftover:
            raise SystemExit(f"store meter miscounts its own commands: {dict(leftover)}")


# worker CPU accounting ---------------------------------------------------------------------
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
#: How long each worker lives after its queue drained: the default ``prismatic_stats_flush_s`` (5 s), in which
#: the plugin's worker flushes its counters, plus a second; the same for both variants.
SETTLE_S = 6.0


def become_subreaper() -> None:
    """Orphans of our descendants (a pool process its worker did not reap) become our children, not init's.

    So none escapes :func:`check_children`, and none takes its CPU seconds out of the accounting unseen.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def children(pid: int | str = "self") -> set[int]:
    """Pids of the children of process ``pid`` (default: this one), living or not yet reaped (every thread's, from
    /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def children_cpu_s() -> float:
    """User + system CPU seconds of every reaped descendant (a child's own reaped children included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_children(expected: set[int], hostname: str) -> None:
    """After a worker was reaped, this process has no child but ``expected`` (the Redis servers): every pool
    process was reaped by the worker's own shutdown, so the CPU delta holds the whole tree and nothing else."""
    stray = children() - expected
    for pid in stray:  # orphans handed to us as subreaper: not the worker's shutdown
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    if stray:
        raise SystemExit(f"{hostname}: process(es) {sorted(stray)} outlived the worker: its CPU accounting is "
                         "incomplete")


# one run -----------------------------------------------------------------------------------
@dataclass
class Run:
    variant: str
    index: int
    tasks: int
    seconds: float
    cpu_s: float
    store_cmds: Counter[str] = field(default_factory=Counter)
    succeeded: int | None = None

    @property
    def per_s(self) -> float:
        return self.tasks / self.seconds

    @property
    def cpu_per_task(self) -> float:
        return self.cpu_s / self.tasks

    @property
    def cmds(self) -> int:
        return sum(self.store_cmds.values())

    def line(self) -> str:
        text = (f"{self.variant:<6} run {self.index:>2}: {self.tasks} tasks in {self.seconds:7.3f} s"
                f" = {self.per_s:8.1f}/s  cpu {self.cpu_s:6.2f} s = {self.cpu_per_task * 1000:.4f} ms/task")
        if self.variant == "plugin":
            top = ", ".join(f"{k} {v}" for k, v in self.store_cmds.most_common(6))
            text += f"  store cmds {self.cmds} = {self.cmds / self.tasks:.4f}/task ({top})"
            if self.succeeded != self.tasks:
                text += f"  [plugin counted {self.succeeded} succeeded]"
        return text


@dataclass
class Bench:
    apps: dict[str, Celery]
    env: dict[str, str]
    broker: redis.Redis
    marks: redis.Redis
    meter: StoreMeter
    concurrency: int
    runs: int = 0

    def publish(self, app: Celery, n: int, marks: int) -> None:
        task = app.tasks[NOOP]
        with app.producer_or_acquire() as producer:
            for i in range(n):
                task.apply_async((i, n, marks), producer=producer)
        queued = int(self.broker.llen(QUEUE))
        if queued != n:
            raise SystemExit(f"expected {n} messages in queue {QUEUE!r}, found {queued}")

    def run(self, variant: str, n: int) -> Run:
        self.runs += 1
        marks = min(max(8, 4 * self.concurrency), n // 4)
        hostname = f"{variant}-{self.runs}@bench"
        self.marks.delete(STARTS_KEY, ENDS_KEY)
        own_before = self.meter.own.copy()
        before = self.meter.snapshot()
        self.publish(self.apps[variant], n, marks)
        worker = WorkerProcess(
            "benchmarks.apps", hostname=hostname, pool="prefork", concurrency=self.concurrency, queues=[QUEUE],
            extra_args=["--loglevel", "WARNING"], env={**self.env, "BENCH_VARIANT": variant}, cwd=ROOT,
        )
        succeeded: int | None = None
        others, cpu_before = children(), children_cpu_s()
        with worker:

            def finished() -> bool:
                if worker.proc is not None and worker.proc.poll() is not None:
                    raise SystemExit(f"worker {hostname} exited with {worker.proc.returncode}:\n{worker.log}")
                return int(self.marks.llen(ENDS_KEY)) >= marks

            wait_for(finished, timeout_s=60 + n / 50, interval_s=0.05, message=f"{n} tasks on {hostname}")
            drained = time.monotonic()
            if variant == "plugin":
                key = Keys(self.apps[variant].main).key("stats", hostname)

                def counted() -> bool:
                    nonlocal succeeded
                    succeeded = int(self.meter.hget(key, f"{QUEUE}:succeeded") or 0)
                    return succeeded >= n

                try:
                    wait_for(counted, timeout_s=10, interval_s=0.25, message="the plugin's success counters")
                except AssertionError as exc:
                    print(f"  note: {exc}", flush=True)
            # Both variants idle as long after the drain (the plugin's counters are flushed within it), so the
            # CPU of a worker's idle loop and background threads is counted for the same time in each.
            time.sleep(max(0.0, SETTLE_S - (time.monotonic() - drained)))
            code = worker.stop()
        if code != 0:
            raise SystemExit(f"worker {hostname} exited with {code}:\n{worker.log}")
        cpu_s = children_cpu_s() - cpu_before  # the worker is reaped: its whole tree is in
        check_children(others, hostname)
        after = self.meter.snapshot()
        left = int(self.broker.llen(QUEUE))
        if left:
            raise SystemExit(f"{left} messages left in queue {QUEUE!r} after {hostname}")
        starts = [float(v) for v in self.marks.lrange(STARTS_KEY, 0, -1)]
        ends = [float(v) for v in self.marks.lrange(ENDS_KEY, 0, -1)]
        if len(starts) != marks or len(ends) != marks:
            raise SystemExit(f"{hostname}: expected {marks} start and end marks, got {len(starts)} and {len(ends)}")
        Path(worker._log.name).unlink(missing_ok=True)  # a run that went well leaves no log behind
        store_cmds = self.meter.delta(before, after, own_before)
        if variant == "plain" and store_cmds:
            raise SystemExit(f"plain Celery sent commands to the plugin store: {dict(store_cmds)}")
        return Run(variant, self.runs, n, max(ends) - min(starts), cpu_s, store_cmds, succeeded)


# the failure path ----------------------------------------------------------------------------
def crash_round_trips(store_url: str, port: int, crashes: int) -> dict[str, float]:
    """Mean store round trips per failed execution, by kind (lessons on: the default)."""
    import redis.connection
    from celery.canvas import Signature
    from celery.exceptions import Retry

    app = make_app("plugin", "memory://", store_url=store_url)
    runtime = get_runtime(app)
    assert runtime is not None and runtime.learning is not None
    task = app.tasks[NOOP]
    sent = [0]
    original = redis.connection.Connection.send_packed_command

    def counting(self: redis.connection.Connection, command: object, check_health: bool = True) -> None:
        if self.port == port:
            sent[0] += 1
        original(self, command, check_health)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    def fail(task_id: str, exc: Exception) -> None:
        task.push_request(id=task_id, delivery_info={"routing_key": QUEUE}, retries=0, called_directly=False,
                          hostname="bench@crashes", args=(0, 1, 0), kwargs={})
        try:
            runtime.engine.on_crash(task, exc)
        except Retry:
            pass
        finally:
            task.pop_request()

    kinds: dict[str, Callable[[int], Exception]] = {"rerun": lambda i: ConnectionError(f"refused {i}"),
                                                    "dead_letter": lambda i: ValueError(f"invalid payload {i}")}
    means: dict[str, float] = {}
    quiet = logging.getLogger("prismatic_celery")
    level, quiet.level = quiet.level, logging.CRITICAL + 10  # the failures' own log lines are not the measurement
    with patch.object(redis.connection.Connection, "send_packed_command", counting), \
            patch.object(Signature, "apply_async", lambda *_, **__: None):
        for kind, error in kinds.items():
            fail(f"{kind}-warm-up", error(crashes))  # scripts loaded, connections open, the pattern's escalation made
            sent[0] = 0
            for i in range(crashes):
                fail(f"{kind}-{i}", error(i))
            means[kind] = sent[0] / crashes
    quiet.level = level
    app.close()
    return means


# driver --------------------------------------------------------------------------------------
#: The two orders of a pair's runs.
PAIR_ORDERS = (("plain", "plugin"), ("plugin", "plain"))


def pair_orders(pairs: int, seed: int) -> list[tuple[str, str]]:
    """Each pair's order: as many plain-first as plugin-first pairs (one more plain-first for an odd count), shuffled
    by ``seed``."""
    orders = [PAIR_ORDERS[i % 2] for i in range(pairs)]
    random.Random(seed).shuffle(orders)
    return orders


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7, help="measured plain/plugin pairs (default 7)")
    parser.add_argument("--tasks", type=int, default=5000, help="no-op tasks per run (default 5000: runs of a few "
                        "seconds, so worker start-up and the machine's noise weigh little)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool processes (default 2)")
    parser.add_argument("--warmup", type=int, default=None, help="tasks per run of the discarded warm-up pair "
                        "(default min(tasks, 500); 0: none)")
    parser.add_argument("--crashes", type=int, default=200, help="failed executions counted per kind (200)")
    parser.add_argument("--seed", type=int, default=1, help="shuffles the pairs' orders (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="short run for the tests: 1 pair of 400 tasks, no warm-up, 20 crashes per kind")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.tasks, args.warmup, args.crashes = 1, 400, 0, 20
    if args.warmup is None:
        args.warmup = min(args.tasks, 500)
    if args.pairs < 1 or args.tasks < 40 or args.concurrency < 1 or args.warmup < 0 or args.crashes < 1:
        parser.error("--pairs, --concurrency and --crashes must be >= 1, --tasks >= 40, --warmup >= 0")
    if 0 < args.warmup < 40:
        parser.error("--warmup must be 0 or >= 40")
    return args


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of what ``values`` sample: the order statistics ``k`` and
    ``n + 1 - k`` (1-based) of the sorted values, with ``k`` the largest that keeps the binomial coverage at least
    ``level`` (15 values: the 4th and the 12th, 96.5 %). Too few values for ``level`` (under 6 for 95 %): the
    smallest and the largest."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_interval needs at least one value")

    def outside(k: int) -> float:  # P(the median lies below the k-th value) = P(Binomial(n, 1/2) < k), both sides
        return 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and outside(k + 1) <= 1 - level:
        k += 1
    return ordered[k - 1], ordered[n - k]


def summarize(runs: list[Run], pairs: int, tasks: int) -> dict[str, float | list[float]]:
    plain = [r for r in runs if r.variant == "plain"]
    plugin = [r for r in runs if r.variant == "plugin"]
    ratios = [b.per_s / a.per_s for a, b in zip(plain, plugin, strict=True)]
    cpu_ratios = [b.cpu_per_task / a.cpu_per_task for a, b in zip(plain, plugin, strict=True)]
    plain_cpu, plugin_cpu = (statistics.median(r.cpu_per_task for r in rs) for rs in (plain, plugin))
    total_tasks = sum(r.tasks for r in plugin)
    total_cmds = sum(r.cmds for r in plugin)
    by_command: Counter[str] = Counter()
    for r in plugin:
        by_command.update(r.store_cmds)
    intervals = {name: [round(x, 4) for x in median_interval(values)]
                 for name, values in (("overhead_ratio_interval", ratios), ("cpu_ratio_interval", cpu_ratios))}
    print(f"ratios plugin/plain per pair: {', '.join(f'{x:.3f}' for x in ratios)}")
    print(f"median plain {statistics.median(a.per_s for a in plain):.1f}/s, "
          f"median plugin {statistics.median(b.per_s for b in plugin):.1f}/s, "
          f"median ratio {statistics.median(ratios):.3f} {_interval(intervals['overhead_ratio_interval'])}")
    print(f"CPU of the worker's process tree per task, ratios plugin/plain per pair: "
          f"{', '.join(f'{x:.3f}' for x in cpu_ratios)}")
    print(f"median plain {plain_cpu * 1000:.4f} ms/task, median plugin {plugin_cpu * 1000:.4f} ms/task, "
          f"median ratio {statistics.median(cpu_ratios):.3f} {_interval(intervals['cpu_ratio_interval'])}")
    print(f"plugin store commands: {total_cmds} for {total_tasks} tasks = {total_cmds / total_tasks:.4f}/task "
          f"({', '.join(f'{k} {v}' for k, v in by_command.most_common())})")
    return {
        "overhead_ratio": round(statistics.median(ratios), 4),
        "redis_cmds_per_task": round(total_cmds / total_tasks, 5),
        "pairs": pairs,
        "tasks": tasks,
        "plain_tasks_per_s": round(statistics.median(a.per_s for a in plain), 1),
        "plugin_tasks_per_s": round(statistics.median(b.per_s for b in plugin), 1),
        "cpu_ratio": round(statistics.median(cpu_ratios), 4),
        "plain_cpu_s_per_task": round(plain_cpu, 8),
        "plugin_cpu_s_per_task": round(plugin_cpu, 8),
        **intervals,
    }


def _interval(bounds: list[float]) -> str:
    return f"(95 % interval of the median: {bounds[0]:.3f} to {bounds[1]:.3f})"


def compile_sources() -> None:
    """Byte-compile the package and the benchmark's app, as ``pip install`` does for an installed package.

    The project is installed editable, and with ``PYTHONDONTWRITEBYTECODE`` set (as on the project's machines)
    every worker would compile the plugin's modules from source at start: a cost no installed deployment pays,
    and the plugin variant imports more modules than the plain one."""
    for path in (ROOT / "prismatic_celery", ROOT / "benchmarks"):
        compileall.compile_dir(str(path), quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    become_subreaper()
    compile_sources()
    with ExitStack() as stack:
        broker_port = stack.enter_context(redis_server("broker"))
        store_port = stack.enter_context(redis_server("store"))
        broker_url, marks_url = f"redis://{HOST}:{broker_port}/0", f"redis://{HOST}:{broker_port}/1"
        store_url = f"redis://{HOST}:{store_port}/0"
        apps = {v: make_app(v, broker_url, store_url=store_url, marks_url=marks_url) for v in ("plain", "plugin")}
        for app in apps.values():
            stack.callback(app.close)
        meter = StoreMeter(store_url)
        meter.calibrate()
        env = {"BENCH_BROKER_URL": broker_url, "BENCH_STORE_URL": store_url, "BENCH_MARKS_URL": marks_url,
               "PYTHONPATH": pythonpath()}
        bench = Bench(apps, env, redis.Redis.from_url(broker_url), redis.Redis.from_url(marks_url), meter,
                      args.concurrency)
        print(f"prefork -c {args.concurrency}, {args.tasks} no-op tasks per run, {args.pairs} pairs "
              f"(half plain first, half plugin first, shuffled with seed {args.seed}); broker :{broker_port}, "
              f"plugin store :{store_port}; "
              f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        if args.warmup:
            for variant in ("plain", "plugin"):
                print(f"warm-up: {bench.run(variant, args.warmup).line()}", flush=True)
        runs: list[Run] = []
        for order in pair_orders(args.pairs, args.seed):
            for variant in order:
                runs.append(bench.run(variant, args.tasks))
                print(runs[-1].line(), flush=True)
        result = summarize(runs, args.pairs, args.tasks)
        trips = crash_round_trips(store_url, store_port, args.crashes)
        print("store round trips per failed execution (lessons on): "
              + ", ".join(f"{kind} {mean:.2f}" for kind, mean in trips.items()) + f" ({args.crashes} each)")
        result["crash_round_trips"] = round(max(trips.values()), 3)
        print(f"total time {time.monotonic() - began:.1f} s")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
