"""A realistic mixed-fault run: plain Celery vs prismatic-celery, in the same run, plain first.

Run: ``python -m benchmarks.chaos [--quick] [--seed 7] [--cap-s 180] [--keep-logs]``

Setup. One private ``redis-server`` on a free port of 127.0.0.1, started and stopped here: the broker
(db 0, also the plugin's store, as in the plugin's default configuration) and the marks (db 1, where
each task records what happened to it by task id); both databases are flushed before each variant
(this server only). The dependency is the line-protocol TCP server of :mod:`benchmarks.outage` on
127.0.0.1 (``OK``, or ``ERR`` while down; it counts every call made while down). Two real ``celery
worker`` subprocesses, prefork ``-c 2`` each, consume the three queues. The app is
:mod:`benchmarks.chaos_apps` (both variants, their settings and the task bodies are described there):

* domain ``core`` (``rest_for_one``): ``orders`` (400 messages, each calls the dependency; 70 of them
  "transient": their first execution raises ``ConnectionError("connection reset")``), then ``reports``
  (1,200 healthy messages, 10-20 ms of work);
* domain ``osint`` (``one_for_one``): ``sources`` (300 messages: 100 deterministic logic errors that
  raise ``ValueError`` every time, 5 poison messages that kill their pool process every time, 195
  healthy).

The faults, at the same moments (seconds after the first publish) in both variants: the dependency
is down from 3 s to 13 s; worker 1 is SIGKILLed (its whole process group) at 7 s and started again
with the same arguments at 9 s, as a process supervisor would. The 1,900 messages are published in
one shuffled order (seeded) paced evenly over 15 s, the same order and timing in both variants:
arrivals over time, as in production, so the outage and the kill land in the middle of the traffic
rather than after a burst has been prefetched (``--quick``: 300 messages over 5 s, outage 1-5 s,
kill at 2.5 s, restart at 4.5 s).

Broker transport options (both variants, identical): kombu's Redis transport puts a killed worker's
unacknowledged messages (the ones it was running, prefetched, or holding for their countdown) back
on their queue only once they are ``visibility_timeout`` old, one hour by default; here 60 s, with
the restore sweep every second. 60 s because it must be longer than any countdown either variant
uses in this run: a worker holds a countdown (ETA) message unacknowledged until it is due, and one
held longer than the visibility timeout would be restored while still held, then run twice. Plain
Celery's countdowns are capped at 16 s (``retry_backoff_max``); the plugin's are at most 17 s (its
default backoff's fifth and last re-run), 30 s for a circuit deferral (the breaker's default reset
timeout), 1 s for a paused queue; only a domain cool-down (5 s doubling) could be longer, so the
largest countdown each variant logged is reported. ``--quick`` uses 8 s, and a breaker with a 2 s
reset timeout, so the test suite runs both variants in about half a minute: above every countdown of
the plugin there (its transient failures wait 1-3 s, a circuit deferral 2 s), not always above plain
Celery's (a message that retried three times in the 4 s outage may wait up to 8 s: a duplicate of
plain Celery's is then possible, and reported).

A message is *settled* when: healthy, transient or orders: it completed (marks); a logic error: it
ran and failed for good (plain: it raised, no retry applies; plugin: it is in the plugin's
dead-letter queue, ``runtime.dlq.list("osint")``); poison: it is in the plugin's dead-letter queue
(plain Celery redelivers it forever with ``task_reject_on_worker_lost``: it never settles). Each
variant runs until every message that can settle has settled (or is gone: unsettled and held
nowhere in the broker for 2 s, see ``lost_unreceived``) and the broker holds nothing but plain's
poison redeliveries, or ``--cap-s`` (180 s) after the first publish. The workers then get a
warm shutdown (their unacknowledged messages go back to the queues).

Reported per variant, and as one JSON line each (the last two lines of stdout, plain then plugin):
``lost`` (never settled and no longer anywhere in the broker: not in a queue list nor in the
unacknowledged hash, which holds ETA and in-flight messages), ``lost_unreceived`` (those of them that
no worker ever logged as received: kombu's Redis transport takes a message off its list with BRPOP
before recording it as unacknowledged, so one handed to the connection of the worker being SIGKILLed
vanishes before Celery or the plugin sees it; that connection stays open until the worker's pool
processes forked after it connected, which hold a copy of its socket, have died too, so a message
published in the milliseconds after the kill can be lost in either variant; each lost message is
printed with its publish time relative to the kill), ``unsettled_at_cap`` (not settled when
the wait ended), ``healthy_p50_s`` / ``healthy_p99_s`` (publish to first completion of the healthy
messages, reports and healthy sources; one not completed counts as the end of the wait, a lower
bound), ``dead_dependency_calls`` (calls that reached the dependency while it was down),
``logic_error_executions_max`` / ``_total`` (executions of the ``ValueError`` messages),
``poison_runs`` (executions per poison message) and ``poison_runs_at_kill`` (of those, the ones
that started on worker 1 before it was SIGKILLed: a pool process death its worker had not yet seen
when it was killed is no death the plugin can count, so such a run comes on top of the 3 deaths
that quarantine a message), ``duplicate_successes`` (messages completed more
than once), ``seconds`` (first publish to the end of the wait), plus ``messages``, ``settled``,
``dead_lettered_other`` (plugin: messages other than logic errors and poison in a dead-letter
queue) and ``max_countdown_s`` (the largest countdown logged). A ``targets`` line compares them
with the goals first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from benchmarks.chaos_apps import (
    DONE_AT_KEY,
    DONE_KEY,
    ORDERS_TASK,
    POISON_RUNS_KEY,
    QUEUES,
    RAISED_KEY,
    REPORTS_TASK,
    RUNS_KEY,
    SOURCES_TASK,
    VARIANTS,
    make_app,
)
from benchmarks.harness import HOST, ROOT, check_alive, pythonpath, redis_server, start_all
from benchmarks.outage import Dependency
from prismatic_celery.runtime import get_runtime
from prismatic_celery.testing import WorkerProcess

WORKERS, CONCURRENCY = 2, 2
KINDS = ("order", "transient", "report", "source", "logic", "poison")
HEALTHY = frozenset({"report", "source"})
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not acknowledged (in flight, prefetched, ETA)
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: '<queue>\x06\x16<priority>' lists
#: Once this few messages are pending, each poll also reads the broker; one unsettled and held nowhere in it
#: for GONE_AFTER_S (a message is always in a queue list or the unacknowledged hash, even while it runs or
#: waits for its countdown, except for the instant between BRPOP and its worker recording it) is gone.
GONE_SCAN_BELOW, GONE_AFTER_S = 50, 2.0
RETRY_IN = re.compile(r" retry: Retry in ([0-9.]+)s")
RECEIVED = re.compile(r"\] Task [\w.]+\[([\w-]+)\] received")


@dataclass(frozen=True)
class Scenario:
    """How many messages of each kind, and when each fault happens (seconds after the first publish)."""

    counts: dict[str, int]
    publish_s: float
    down_at_s: float
    down_s: float
    kill_at_s: float
    restart_at_s: float
    visibility_s: int
    cap_s: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())


FULL = Scenario(counts={"order": 330, "transient": 70, "report": 1200, "source": 195, "logic": 100, "poison": 5},
                publish_s=15.0, down_at_s=3.0, down_s=10.0, kill_at_s=7.0, restart_at_s=9.0, visibility_s=60,
                cap_s=180.0)
QUICK = Scenario(counts={"order": 50, "transient": 10, "report": 180, "source": 38, "logic": 20, "poison": 2},
                 publish_s=5.0, down_at_s=1.0, down_s=4.0, kill_at_s=2.5, restart_at_s=4.5, visibility_s=8,
                 cap_s=90.0)


@dataclass(frozen=True)
class Message:
    id: str
    kind: str
    at_s: float  # publish time, seconds after the first publish


def plan(scenario: Scenario, seed: int) -> list[Message]:
    """Every message in one shuffled order, paced evenly over ``publish_s`` (the same in both variants)."""
    kinds = [kind for kind in KINDS for _ in range(scenario.counts[kind])]
    random.Random(seed).shuffle(kinds)
    step = scenario.publish_s / max(1, len(kinds) - 1)
    return [Message(f"{kind}-{i:04d}", kind, i * step) for i, kind in enumerate(kinds)]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


# what the broker still holds -------------------------------------------------------------------------------
def broker_ids(broker: redis.Redis) -> Counter[str]:
    """Task ids of every message in the queue lists (priority lists included) and the unacknowledged hash."""
    found: Counter[str] = Counter()
    payloads: list[Any] = []
    for key in broker.scan_iter(count=1000):
        name = key.decode(errors="replace")
        if name.split(PRIORITY_SEP)[0] in QUEUES:  # "orders", or "orders\x06\x163" (priority 3)
            payloads += [json.loads(raw) for raw in broker.lrange(key, 0, -1)]
    payloads += [json.loads(raw)[0] for raw in broker.hvals(UNACKED_KEY)]
    for payload in payloads:
        task_id = (payload.get("headers") or {}).get("id")
        if isinstance(task_id, str):
            found[task_id] += 1
    return found


# one variant -----------------------------------------------------------------------------------------------
@dataclass
class Run:
    variant: str
    messages: int
    settled: int
    unsettled_at_cap: int
    lost: int
    lost_unreceived: int
    lost_detail: list[str]
    healthy_p50_s: float
    healthy_p99_s: float
    dead_dependency_calls: int
    dead_callers: int
    logic_runs: list[int]
    poison_runs: list[int]
    poison_runs_at_kill: list[int]
    duplicate_successes: list[str]
    dead_lettered_other: int
    max_countdown_s: float
    seconds: float
    capped: bool
    log_counts: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        logged = ", ".join(f"{k} {v}" for k, v in self.log_counts.items())
        ended = f"cap reached at {self.seconds:.1f} s" if self.capped else f"waiting ended at {self.seconds:.1f} s"
        return [
            f"{self.variant:<6}: {self.messages} messages, {ended}: settled {self.settled}, unsettled "
            f"{self.unsettled_at_cap}, lost {self.lost}, completed twice {len(self.duplicate_successes)}"
            + (f" ({', '.join(self.duplicate_successes[:5])})" if self.duplicate_successes else ""),
            f"        healthy latency p50 {self.healthy_p50_s:.3f} s, p99 {self.healthy_p99_s:.3f} s; "
            f"{self.dead_dependency_calls} calls reached the dead dependency ({self.dead_callers} messages); "
            f"logic errors ran {sum(self.logic_runs)} times (at most {max(self.logic_runs, default=0)} each); "
            f"poison runs {self.poison_runs} (started on the killed worker before the kill: "
            f"{self.poison_runs_at_kill})",
            f"        other messages dead-lettered {self.dead_lettered_other}; largest countdown "
            f"{self.max_countdown_s:g} s [{logged}]",
            *(f"        lost: {detail}" for detail in self.lost_detail),
        ]

    def json(self) -> dict[str, Any]:
        return {
            "mode": self.variant, "lost": self.lost, "lost_unreceived": self.lost_unreceived,
            "unsettled_at_cap": self.unsettled_at_cap,
            "healthy_p50_s": round(self.healthy_p50_s, 4), "healthy_p99_s": round(self.healthy_p99_s, 4),
            "dead_dependency_calls": self.dead_dependency_calls,
            "logic_error_executions_max": max(self.logic_runs, default=0),
            "logic_error_executions_total": sum(self.logic_runs), "poison_runs": self.poison_runs,
            "poison_runs_at_kill": self.poison_runs_at_kill,
            "duplicate_successes": len(self.duplicate_successes), "seconds": round(self.seconds, 2),
            "messages": self.messages, "settled": self.settled, "dead_lettered_other": self.dead_lettered_other,
            "max_countdown_s": self.max_countdown_s,
        }


@dataclass
class Bench:
    apps: dict[str, Celery]
    env: dict[str, str]
    broker: redis.Redis
    marks: redis.Redis
    scenario: Scenario
    messages: list[Message]
    keep_logs: bool

    def dead_letters(self, variant: str) -> set[str]:
        """Task ids in the plugin's dead-letter queues (none for plain Celery)."""
        runtime = get_runtime(self.apps[variant]) if variant == "plugin" else None
        if runtime is None:
            return set()
        return {str(entry["id"]) for domain in runtime.supervisor.domain_list
                for entry in runtime.dlq.list(domain.name, limit=100_000)}

    def settled(self, variant: str) -> set[str]:
        """Ids of the messages settled so far (see the module docstring)."""
        done = set(self.marks.hkeys(DONE_KEY))
        raised = set(self.marks.hkeys(RAISED_KEY))
        lettered = self.dead_letters(variant)
        result = set()
        for message in self.messages:
            if message.kind in ("logic", "poison") and variant == "plugin":
                ok = message.id in lettered
            elif message.kind == "logic":
                ok = message.id in raised
            elif message.kind == "poison":
                ok = False  # plain Celery redelivers it forever
            else:
                ok = message.id in done
            if ok:
                result.add(message.id)
        return result

    def can_settle(self, variant: str, message: Message) -> bool:
        return not (variant == "plain" and message.kind == "poison")

    def publish(self, app: Celery, message: Message, port: int, producer: Any) -> None:
        task, args = {
            "order": (ORDERS_TASK, (port, False)), "transient": (ORDERS_TASK, (port, True)),
            "report": (REPORTS_TASK, ()), "source": (SOURCES_TASK, ("healthy",)),
            "logic": (SOURCES_TASK, ("logic",)), "poison": (SOURCES_TASK, ("poison",)),
        }[message.kind]
        app.tasks[task].apply_async(args, task_id=message.id, producer=producer)

    def run(self, variant: str) -> Run:
        scenario = self.scenario
        self.broker.flushdb()  # this script's own redis-server only
        self.marks.flushdb()
        app = self.apps[variant]
        dependency = Dependency()
        threading.Thread(target=dependency.serve_forever, daemon=True).start()
        workers = [
            WorkerProcess("benchmarks.chaos_apps", hostname=f"{variant}-{i + 1}@chaos", pool="prefork",
                          concurrency=CONCURRENCY, queues=list(QUEUES), cwd=ROOT,
                          env={**self.env, "CHAOS_VARIANT": variant})
            for i in range(WORKERS)
        ]
        killed: set[int] = set()
        killed_at: list[float] = []  # when the kill began, when its main process was reaped
        try:
            with ExitStack() as stack:
                start_all(stack, workers, app)

                def alive() -> None:
                    check_alive(workers, skip=killed)

                def kill() -> None:
                    killed.add(0)
                    killed_at.append(time.time())
                    workers[0].kill()
                    killed_at.append(time.time())  # its main process is reaped: publishing goes on

                def restart() -> None:
                    workers[0].start()
                    killed.discard(0)

                published: dict[str, float] = {}
                with app.producer_or_acquire() as producer:
                    def send(message: Message) -> Callable[[], None]:
                        def go() -> None:
                            published[message.id] = time.time()
                            self.publish(app, message, dependency.port, producer)
                        return go

                    timeline: list[tuple[float, int, Callable[[], None]]] = [
                        (scenario.down_at_s, 0, lambda: dependency.set_down(True)),
                        (scenario.down_at_s + scenario.down_s, 0, lambda: dependency.set_down(False)),
                        (scenario.kill_at_s, 0, kill),
                        (scenario.restart_at_s, 0, restart),
                        *((m.at_s, 1, send(m)) for m in self.messages),
                    ]
                    began = time.monotonic()
                    for at_s, _, action in sorted(timeline, key=lambda e: (e[0], e[1])):
                        while (wait := began + at_s - time.monotonic()) > 0:
                            alive()
                            time.sleep(min(wait, 0.05))
                        action()

                settleable = {m.id for m in self.messages if self.can_settle(variant, m)}
                unsettleable = {m.id for m in self.messages} - settleable
                missing_since: dict[str, float] = {}  # unsettled and in no broker structure, since when
                capped = True
                while time.monotonic() - began < scenario.cap_s:
                    alive()
                    pending = settleable - self.settled(variant)
                    if len(pending) <= GONE_SCAN_BELOW:
                        held = set(broker_ids(self.broker))
                        now = time.monotonic()
                        missing_since = {i: missing_since.get(i, now) for i in pending - held}
                        gone = {i for i, since in missing_since.items() if now - since >= GONE_AFTER_S}
                        if pending <= gone and not held - unsettleable:
                            capped = False
                            break
                    time.sleep(0.25)
                seconds = time.monotonic() - began
                settled = self.settled(variant)
                time.sleep(1.0)  # anything still running twice would show up now
                for worker in workers:
                    worker.stop()
            return self.measure(variant, dependency, workers, published, (killed_at[0], killed_at[1]), settled,
                                seconds, capped)
        finally:
            dependency.shutdown()
            dependency.server_close()

    def measure(self, variant: str, dependency: Dependency, workers: Sequence[WorkerProcess],
                published: dict[str, float], kill: tuple[float, float], settled: set[str], seconds: float,
                capped: bool) -> Run:
        """The figures of one variant, read once its workers have stopped."""
        runs = {str(k): int(v) for k, v in self.marks.hgetall(RUNS_KEY).items()}
        done = {str(k): int(v) for k, v in self.marks.hgetall(DONE_KEY).items()}
        done_at = {str(k): float(v) for k, v in self.marks.hgetall(DONE_AT_KEY).items()}
        strangers = set(runs) - {m.id for m in self.messages}
        if strangers:
            raise SystemExit(f"{variant}: executions of unknown task ids {sorted(strangers)[:5]}")
        final = self.settled(variant)
        in_broker = set(broker_ids(self.broker))
        lettered = self.dead_letters(variant)
        end = min(published.values(), default=0.0) + seconds
        latencies = [done_at.get(m.id, end) - published[m.id] for m in self.messages if m.kind in HEALTHY]
        with dependency.lock:
            calls_down = dependency.calls_down.copy()
        logs = "".join(worker.log for worker in workers)
        countdowns = [float(c) for c in RETRY_IN.findall(logs)]
        received = set(RECEIVED.findall(logs))
        poison = [m for m in self.messages if m.kind == "poison"]
        lost = [m for m in self.messages if m.id not in final and m.id not in in_broker]
        lost_detail = [
            f"{m.id} published {1000 * (published[m.id] - kill[1]):+.0f} ms after the killed worker was reaped, "
            f"{'received by a worker' if m.id in received else 'never received by any worker'}, "
            f"{runs.get(m.id, 0)} executions" for m in lost
        ]
        log_counts = {
            "retries logged": len(countdowns),
            "pool processes lost": logs.count("exited with 'exitcode"),
        }
        if variant == "plugin":
            for label, event in (("circuit changes", "circuit"), ("child restarts", "restart"),
                                 ("pauses", "pause"), ("dead letters", "dead-letter")):
                log_counts[f"{label} logged"] = logs.count(f"event=supervision-{event} ")
        if not self.keep_logs:
            for worker in workers:
                Path(worker._log.name).unlink(missing_ok=True)
        else:
            print(f"  {variant} worker logs: {', '.join(worker._log.name for worker in workers)}", flush=True)
        return Run(
            variant=variant, messages=len(self.messages), settled=len(settled),
            unsettled_at_cap=len(self.messages) - len(settled),
            lost=len(lost), lost_unreceived=sum(1 for m in lost if m.id not in received), lost_detail=lost_detail,
            healthy_p50_s=percentile(latencies, 0.50), healthy_p99_s=percentile(latencies, 0.99),
            dead_dependency_calls=sum(calls_down.values()), dead_callers=len(calls_down),
            logic_runs=[runs.get(m.id, 0) for m in self.messages if m.kind == "logic"],
            poison_runs=[runs.get(m.id, 0) for m in poison],
            poison_runs_at_kill=[sum(1 for run in self.marks.lrange(f"{POISON_RUNS_KEY}:{m.id}", 0, -1)
                                     if run.split()[0] == workers[0].hostname and float(run.split()[1]) < kill[0])
                                 for m in poison],
            duplicate_successes=sorted(i for i, n in done.items() if n > 1),
            dead_lettered_other=sum(1 for m in self.messages if m.id in lettered and m.kind not in ("logic", "poison")),
            max_countdown_s=max(countdowns, default=0.0), seconds=seconds, capped=capped, log_counts=log_counts,
        )


# driver ----------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run for the tests: 300 messages over 5 s, 4 s outage, cap 90 s")
    parser.add_argument("--seed", type=int, default=7, help="seed of the publishing order (default 7)")
    parser.add_argument("--cap-s", type=float, default=None,
                        help="seconds after the first publish before unsettled messages are counted (180; quick 90)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and print their paths")
    args = parser.parse_args(argv)
    if args.cap_s is not None and args.cap_s <= 0:
        parser.error("--cap-s must be > 0")
    return args


def targets(plain: Run, plugin: Run) -> str:
    ratio = plain.dead_dependency_calls / plugin.dead_dependency_calls if plugin.dead_dependency_calls else math.inf
    n_logic = len(plugin.logic_runs)
    checks = {
        f"plugin lost {plugin.lost} == 0 ({plugin.lost_unreceived} never received by a worker) and unsettled_at_cap "
        f"{plugin.unsettled_at_cap} == 0":
            plugin.lost == 0 and plugin.unsettled_at_cap == 0,
        f"plugin healthy_p99 {plugin.healthy_p99_s:.3f} s <= plain {plain.healthy_p99_s:.3f} s":
            plugin.healthy_p99_s <= plain.healthy_p99_s,
        f"dead-dependency calls plain/plugin {ratio:.1f} >= 50": ratio >= 50,
        f"plugin logic errors ran once each ({sum(plugin.logic_runs)} runs for {n_logic})":
            all(n == 1 for n in plugin.logic_runs),
        f"plugin poison runs {plugin.poison_runs} <= 3 each, plus at most the one a message may have been running on "
        f"the worker SIGKILLed under it (a death no worker saw)":
            all(n <= 3 + (k > 0) for n, k in zip(plugin.poison_runs, plugin.poison_runs_at_kill, strict=True)),
    }
    return "targets: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in checks.items())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    scenario = Scenario(**{**base.__dict__, "cap_s": args.cap_s or base.cap_s})
    messages = plan(scenario, args.seed)
    began = time.monotonic()
    with ExitStack() as stack:
        port = stack.enter_context(redis_server("broker"))
        broker_url, marks_url = f"redis://{HOST}:{port}/0", f"redis://{HOST}:{port}/1"
        apps = {v: make_app(v, broker_url, marks_url=marks_url, visibility_s=scenario.visibility_s, quick=args.quick)
                for v in VARIANTS}
        for app in apps.values():
            stack.callback(app.close)
        env = {"CHAOS_BROKER_URL": broker_url, "CHAOS_MARKS_URL": marks_url,
               "CHAOS_VISIBILITY_S": str(scenario.visibility_s), "CHAOS_QUICK": "1" if args.quick else "0",
               "PYTHONPATH": pythonpath()}
        bench = Bench(apps, env, redis.Redis.from_url(broker_url), redis.Redis.from_url(marks_url,
                      decode_responses=True), scenario, messages, args.keep_logs)
        counts = ", ".join(f"{k} {v}" for k, v in scenario.counts.items())
        print(f"{scenario.total} messages ({counts}) over {scenario.publish_s:g} s, seed {args.seed}; dependency "
              f"down {scenario.down_at_s:g}-{scenario.down_at_s + scenario.down_s:g} s; worker 1 SIGKILLed at "
              f"{scenario.kill_at_s:g} s, restarted at {scenario.restart_at_s:g} s; {WORKERS} workers x prefork "
              f"-c {CONCURRENCY}; visibility timeout {scenario.visibility_s} s; cap {scenario.cap_s:g} s; broker "
              f":{port}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        runs: dict[str, Run] = {}
        for variant in VARIANTS:
            runs[variant] = bench.run(variant)
            print("\n".join(runs[variant].lines()), flush=True)
        plain, plugin = runs["plain"], runs["plugin"]
        print(f"{'':<30}{'plain':>10}{'plugin':>10}")
        for label, a, b in (
            ("lost", plain.lost, plugin.lost),
            ("unsettled when waiting ended", plain.unsettled_at_cap, plugin.unsettled_at_cap),
            ("healthy p50 (s)", f"{plain.healthy_p50_s:.3f}", f"{plugin.healthy_p50_s:.3f}"),
            ("healthy p99 (s)", f"{plain.healthy_p99_s:.3f}", f"{plugin.healthy_p99_s:.3f}"),
            ("dead-dependency calls", plain.dead_dependency_calls, plugin.dead_dependency_calls),
            ("logic-error executions", sum(plain.logic_runs), sum(plugin.logic_runs)),
            ("poison executions", sum(plain.poison_runs), sum(plugin.poison_runs)),
            ("completed twice", len(plain.duplicate_successes), len(plugin.duplicate_successes)),
            ("seconds", f"{plain.seconds:.1f}", f"{plugin.seconds:.1f}"),
        ):
            print(f"{label:<30}{a:>10}{b:>10}")
        print(targets(plain, plugin))
        print(f"total time {time.monotonic() - began:.1f} s", flush=True)
    for run in (plain, plugin):
        print(json.dumps(run.json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
