"""What the plugin adds to a whole worker, per task, counted in function calls rather than CPU seconds.

Run: ``python -m benchmarks.worker_calls [--tasks 3000] [--top 12] [--quick]``

:mod:`benchmarks.overhead` measures CPU seconds, which move by several percent between runs of the same worker on a
shared machine; :mod:`benchmarks.success_path` counts bytecode instructions, but only of the task's own path. This
counts every call of the worker's processes (Python functions and built-ins, every thread, from start-up to
shutdown) with a profile hook (:mod:`benchmarks.callcount`), in the overhead benchmark's setup: the same app in
its ``plain`` and ``plugin`` variants, a real ``celery worker`` (prefork, 2 processes) on private Redis servers,
its queue filled before it starts. Each variant runs twice, with N and 2N tasks; the difference of the two runs'
counts, divided by N, is the cost per task, start-up and shutdown cancelled. Calls made by background threads
count too: they depend on time (the profiled worker runs several times slower), so they weigh more here than
in a worker at full speed.

The counts are per process role: ``main`` (the worker's own process: the broker's consumer, the pool's
dispatcher, the plugin's admission and background services) and ``pool`` (the pool processes together: the
tasks). Output: per role and variant the calls per task, the functions whose calls per task grew most, then one
JSON line::

    {"main_plain": calls, "main_plugin": calls, "pool_plain": calls, "pool_plugin": calls, "tasks": N}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import redis

from benchmarks.apps import VARIANTS, make_app
from benchmarks.harness import HOST, ROOT, pythonpath, redis_server
from benchmarks.overhead import Bench, StoreMeter, become_subreaper, compile_sources

HOOK = ROOT / "benchmarks" / "callcount"
ROLES = ("main", "pool")


def read_counts(directory: Path, worker_parent: int) -> dict[str, Counter[str]]:
    """The counts the hook wrote, summed per role: a process whose parent is ``worker_parent`` is a worker's main
    process, any other a pool process."""
    roles: dict[str, Counter[str]] = {role: Counter() for role in ROLES}
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        roles["main" if data["ppid"] == worker_parent else "pool"].update(data["counts"])
    return roles


def per_task(small: Counter[str], large: Counter[str], tasks: int) -> dict[str, float]:
    """Calls per task by function: the larger run's count minus the smaller's, over the tasks between them."""
    return {name: (large[name] - small[name]) / tasks for name in set(small) | set(large)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000, help="N: each variant runs N, then 2N tasks (3000)")
    parser.add_argument("--top", type=int, default=12, help="functions shown per role (12)")
    parser.add_argument("--quick", action="store_true", help="short run for the tests: N = 200")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = 200
    if args.tasks < 40:
        parser.error("--tasks must be >= 40")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    become_subreaper()
    compile_sources()
    n = args.tasks
    slopes: dict[tuple[str, str], dict[str, float]] = {}
    with ExitStack() as stack:
        broker_port = stack.enter_context(redis_server("broker"))
        store_port = stack.enter_context(redis_server("store"))
        broker_url, marks_url = f"redis://{HOST}:{broker_port}/0", f"redis://{HOST}:{broker_port}/1"
        store_url = f"redis://{HOST}:{store_port}/0"
        apps = {v: make_app(v, broker_url, store_url=store_url, marks_url=marks_url) for v in VARIANTS}
        for app in apps.values():
            stack.callback(app.close)
        meter = StoreMeter(store_url)
        print(f"prefork -c 2, every call of the worker's processes counted; {n} then {2 * n} no-op tasks per "
              f"variant", flush=True)
        for variant in VARIANTS:
            runs = []
            for tasks in (n, 2 * n):
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prismatic-calls-")))
                env = {"BENCH_BROKER_URL": broker_url, "BENCH_STORE_URL": store_url, "BENCH_MARKS_URL": marks_url,
                       "PYTHONPATH": f"{HOOK}:{pythonpath()}", "BENCH_CALLS_DIR": str(directory)}
                bench = Bench(apps, env, redis.Redis.from_url(broker_url), redis.Redis.from_url(marks_url), meter,
                              concurrency=2)
                run = bench.run(variant, tasks)
                counts = read_counts(directory, worker_parent=os.getpid())
                if not counts["main"] or not counts["pool"]:
                    raise SystemExit(f"{variant}: the profile hook wrote no counts for the main or pool processes")
                runs.append(counts)
                print(f"{variant:<6} {tasks:5d} tasks: " + ", ".join(
                    f"{role} {sum(counts[role].values())} calls" for role in ROLES) + f" ({run.seconds:.1f} s)",
                    flush=True)
            for role in ROLES:
                slopes[(variant, role)] = per_task(runs[0][role], runs[1][role], n)
    result: dict[str, float] = {}
    for role in ROLES:
        plain, plugin = slopes[("plain", role)], slopes[("plugin", role)]
        result[f"{role}_plain"] = round(sum(plain.values()), 1)
        result[f"{role}_plugin"] = round(sum(plugin.values()), 1)
        extra = result[f"{role}_plugin"] - result[f"{role}_plain"]
        print(f"{role:<4} calls per task: plain {result[f'{role}_plain']:.1f}, plugin {result[f'{role}_plugin']:.1f} "
              f"({extra:+.1f}, {extra / result[f'{role}_plain']:+.1%}); grown most:")
        growth = {name: plugin.get(name, 0.0) - plain.get(name, 0.0) for name in set(plain) | set(plugin)}
        for name, grown in sorted(growth.items(), key=lambda item: -item[1])[:args.top]:
            print(f"     {grown:+7.2f}  {name.removeprefix(f'{ROOT}/')}")
    result["tasks"] = n
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
