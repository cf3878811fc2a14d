"""Does the plugin learn? Rounds of a seeded fault mix on a real worker, with the default settings.

``python -m benchmarks.learning [--seed N] [--rounds R] [--quick]`` starts a private
``redis-server`` (broker and store) and one prefork worker (2 processes) of
``benchmarks/learning_apps.py``, then plays rounds. Each round publishes healthy messages and
the seven fault patterns of that module in a seeded order on the busy queue, with two
*failovers* of each of Redis, the database and the cache format (a process that opened them
before goes stale), and
waits until every message succeeded or was dead-lettered. Two of the patterns are ones where
the built-in rule's action is wrong (a stale Redis pool and a stale database connection need a
fresh process, not a retry); for two more no rule exists.

Each round prints its figures from the knowledge counters (``prismatic:{<ns>}:knowledge``,
differences over the round); the last line is one JSON object with the seed's five figures
over the rounds after the first (total lessons, auto-remediated %, mean time to recovery in
seconds, escalation rate, false-positive rate) and the attempts per recovered message of each
round. Definitions: README, "Knowledge metrics". Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import redis

from benchmarks.harness import HOST, ROOT, check_alive, pythonpath, redis_server, start_all
from benchmarks.learning_apps import (
    DONE_KEY,
    GENERATION_KEY,
    PATTERNS,
    PIDS_KEY,
    QUEUE,
    RESOURCES,
    RUNS_KEY,
    TASK,
    make_app,
)
from prismatic_celery.lessons import KnowledgeMetrics
from prismatic_celery.runtime import get_runtime
from prismatic_celery.testing import WorkerProcess, wait_for

#: Messages per round: healthy ones keep the queue busy; the faults in the proportions of a real fleet.
FULL = {"healthy": 250, "blip": 32, "stale_redis": 20, "stale_db": 20, "corrupt_cache": 20, "overloaded": 24,
        "leak": 6, "bug": 6}
QUICK = {"healthy": 40, "blip": 8, "stale_redis": 5, "stale_db": 5, "corrupt_cache": 5, "overloaded": 12,
         "leak": 6, "bug": 1}
PUBLISH_RATE = 60.0  # messages per second
SETTLE_S = 180.0
CONCURRENCY = 2  # pool processes (the machine's cores)


@dataclass
class Round:
    """One round's figures, from the differences of the knowledge counters."""

    index: int
    crashes: int
    known: int
    auto: int
    auto_ms: int
    remediations: int
    false_positives: int
    escalations: int
    dead_letters: int
    recoveries: int
    recovered_crashes: int
    seconds: float
    processes: int = 0
    by_pattern: dict[str, float] = field(default_factory=dict)  # attempts per recovered message of each pattern

    @property
    def auto_pct(self) -> float | None:
        return 100.0 * self.auto / self.known if self.known else None

    @property
    def mttr_s(self) -> float | None:
        return self.auto_ms / self.auto / 1000.0 if self.auto else None

    @property
    def fp_rate(self) -> float | None:
        return self.false_positives / self.remediations if self.remediations else None

    @property
    def attempts(self) -> float | None:
        return self.recovered_crashes / self.recoveries if self.recoveries else None

    def line(self) -> str:
        def fmt(value: float | None, spec: str) -> str:
            return "n/a" if value is None else format(value, spec)

        return (f"round {self.index}: crashes {self.crashes}, known {self.known}, auto-remediated "
                f"{fmt(self.auto_pct, '.1f')}%, MTTR {fmt(self.mttr_s, '.2f')}s, false positives "
                f"{fmt(None if self.fp_rate is None else 100 * self.fp_rate, '.1f')}%, escalations {self.escalations},"
                f" dead letters {self.dead_letters}, attempts per recovery {fmt(self.attempts, '.2f')}, "
                f"{self.processes} pool processes, settled in {self.seconds:.1f}s"
                + "".join(f"\n  {kind}: {value:.2f} attempts per recovery" for kind, value in self.by_pattern.items()))


def delta(before: KnowledgeMetrics, after: KnowledgeMetrics, index: int, seconds: float) -> Round:
    def d(name: str) -> int:
        return int(getattr(after, name)) - int(getattr(before, name))

    return Round(index, d("crashes"), d("known_pattern_crashes"), d("auto_remediated"), d("auto_recovery_ms_total"),
                 d("remediations_applied"), d("false_positives"), d("escalations"), d("dead_letters"),
                 d("recoveries"), d("recovered_crashes"), seconds)


def summary(rounds: Sequence[Round], lessons: int, crashes_total: int, escalations_total: int) -> dict[str, Any]:
    later = rounds[1:] or rounds
    known = sum(r.known for r in later)
    auto = sum(r.auto for r in later)
    remediations = sum(r.remediations for r in later)
    return {
        "total_lessons": lessons,
        "auto_remediated_pct": round(100.0 * auto / known, 1) if known else None,
        "mean_time_to_recovery_s": round(sum(r.auto_ms for r in later) / auto / 1000.0, 3) if auto else None,
        "escalation_rate": round(escalations_total / crashes_total, 4) if crashes_total else None,
        "false_positive_rate": round(sum(r.false_positives for r in later) / remediations, 4) if remediations else None,
        "attempts_per_recovery": [None if r.attempts is None else round(r.attempts, 3) for r in rounds],
        "attempts_trend_per_round": trend([r.attempts for r in rounds]),
        "rounds": len(rounds),
    }


def trend(values: Sequence[float | None]) -> float | None:
    """The least-squares slope of ``values`` over their round numbers (negative: falling); None under two points."""
    points = [(float(i), v) for i, v in enumerate(values, 1) if v is not None]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / spread, 4)


def plan(counts: dict[str, int], rng: random.Random) -> list[str]:
    kinds = [kind for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    return kinds


def play_round(app: Any, marks: redis.Redis, runtime: Any, kinds: list[str], index: int,
               workers: Sequence[WorkerProcess]) -> tuple[Round, KnowledgeMetrics]:
    before = runtime.learning.metrics.snapshot()
    marks.delete(PIDS_KEY)
    started = time.time()
    ids: list[str] = []
    n = len(kinds)
    failovers = {n * k // 20: RESOURCES[k % 3] for k in (2, 4, 6, 12, 14, 16)}  # each resource twice
    with app.producer_or_acquire() as producer:
        for position, kind in enumerate(kinds):
            if position in failovers:
                marks.incr(f"{GENERATION_KEY}:{failovers[position]}")
            task_id = f"r{index}-{position}-{kind}"
            app.tasks[TASK].apply_async((kind,), task_id=task_id, producer=producer)
            ids.append(task_id)
            time.sleep(1.0 / PUBLISH_RATE)

    def settled() -> bool:
        check_alive(workers)
        done = set(marks.hkeys(DONE_KEY))
        lettered = {str(e["id"]) for e in runtime.dlq.list("work", limit=100_000)}
        return all(task_id.encode() in done or task_id in lettered for task_id in ids)

    wait_for(settled, timeout_s=SETTLE_S, interval_s=0.25, message=f"round {index} to settle")
    after = runtime.learning.metrics.snapshot()
    result = delta(before, after, index, time.time() - started)
    result.processes = int(marks.scard(PIDS_KEY))
    result.by_pattern = attempts_by_pattern(marks, ids)
    return result, after


def attempts_by_pattern(marks: redis.Redis, ids: Sequence[str]) -> dict[str, float]:
    """Crashes per recovered message of each pattern (a message that crashed, then succeeded), from the marks."""
    runs = dict(zip(ids, marks.hmget(RUNS_KEY, list(ids)), strict=True))
    done = {key.decode() if isinstance(key, bytes) else key for key in marks.hkeys(DONE_KEY)}
    crashes: dict[str, list[int]] = {}
    for task_id, value in runs.items():
        executions = int(value or 0)
        if task_id in done and executions > 1:
            crashes.setdefault(task_id.rsplit("-", 1)[1], []).append(executions - 1)
    return {kind: sum(values) / len(values) for kind, values in sorted(crashes.items())}


def print_unexpected_dead_letters(runtime: Any, workers: Sequence[WorkerProcess]) -> None:
    """Every dead letter but the bug's (a remediation that failed for good) with its crashes from the worker logs:
    which pool process ran each attempt and what it got, the evidence to read when the false-positive rate moves."""
    for entry in runtime.dlq.list("work", limit=100_000):
        task_id = str(entry["id"])
        if task_id.endswith("-bug"):
            continue
        print(f"dead letter {task_id}: {entry.get('reason', '')}", flush=True)
        for worker in workers:
            for line in worker.log.splitlines():
                if f"task_id={task_id} " in line and "event=" in line:
                    print(f"  {line}", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="seed of the fault order")
    parser.add_argument("--rounds", type=int, default=None, help="rounds to play (default 6, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="fewer messages per round (the test suite's run)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = QUICK if args.quick else FULL
    rounds_wanted = args.rounds or (3 if args.quick else 6)
    assert set(counts) == {"healthy", *PATTERNS}
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        port = stack.enter_context(redis_server("learning"))
        url = f"redis://{HOST}:{port}/0"
        os.environ["LEARN_BROKER_URL"] = url
        app = make_app(url)
        runtime = get_runtime(app)
        assert runtime is not None and runtime.learning is not None
        marks = redis.Redis.from_url(url)
        env = {"LEARN_BROKER_URL": url, "PYTHONPATH": pythonpath()}
        workers = [WorkerProcess("benchmarks.learning_apps", hostname="learn-1@bench", pool="prefork",
                                 concurrency=CONCURRENCY, queues=[QUEUE], cwd=ROOT, env=env)]
        start_all(stack, workers, app)
        warm = [app.tasks[TASK].apply_async(("healthy",), task_id=f"warm-{i}") for i in range(8)]
        wait_for(lambda: all(marks.hexists(DONE_KEY, r.id) for r in warm), timeout_s=60, message="warm-up")
        rounds: list[Round] = []
        after = runtime.learning.metrics.snapshot()
        for index in range(1, rounds_wanted + 1):
            result, after = play_round(app, marks, runtime, plan(counts, rng), index, workers)
            rounds.append(result)
            print(result.line(), flush=True)
        for lesson in runtime.learning.lessons.all(limit=None):
            outcomes = ", ".join(f"{label} {stats.succeeded}/{stats.observations}"
                                 for label, stats in sorted(lesson.remediations.items()))
            print(f"lesson {lesson.exc_type} ({lesson.failure_class}, {lesson.count} crashes): {outcomes or '-'}")
        print_unexpected_dead_letters(runtime, workers)
        report = summary(rounds, after.total_lessons, after.crashes, after.escalations)
        report["seed"] = args.seed
        report["overall"] = {k: after.to_json()[k] for k in (
            "auto_remediated_pct", "mean_time_to_recovery_s", "escalation_rate", "false_positive_rate",
            "attempts_per_recovery", "recovery_rate_by_action")}
        print(json.dumps(report, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
