"""``make demo``: the Prismatic Platform healing itself, live, in under two minutes.

Runs the example app with a real worker, injects faults one after another (a
dependency outage, a poison message, a state-corruption bug, a memory hog, a
load spike, a second outage the platform has learned from) and prints the
tree's state as it heals, ending with the knowledge metrics.

Uses the Redis at ``PRISMATIC_REDIS_URL`` when it answers (a prefork worker in
a subprocess), else the embedded default (Celery's in-memory broker, an
in-process store, a solo worker in a thread), and says which.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class Demo:
    """The scenario, step by step, with a live status line while it waits."""

    def __init__(self, app: Any, runtime: Any, dependency: Any, *, real: bool) -> None:
        self.app = app
        self.runtime = runtime
        self.dependency = dependency
        self.real = real
        self.started = time.monotonic()
        self.last_event = "0-0"

    # -- output ---------------------------------------------------------------------------------
    def step(self, number: int, title: str) -> None:
        print(f"\n=== {number}. {title} " + "=" * max(0, 70 - len(title)))

    def status(self) -> str:
        from prismatic_celery.cli.status import tree_state

        state = tree_state(self.runtime)
        paused = [c["queue"] for d in state["domains"] for c in d["children"] if c["paused"]]
        hot = [c["queue"] for d in state["domains"] for c in d["children"] if c["hotspot"]]
        circuits = ", ".join(f"{n}={v.get('state')}" for n, v in self.runtime.circuits.snapshot().items())
        dlq = sum(self.runtime.dlq.count(d.name) for d in self.runtime.supervisor.domain_list)
        return (f"[{time.monotonic() - self.started:5.1f}s] paused: {','.join(paused) or '-'} | "
                f"hotspots: {','.join(hot) or '-'} | circuits: {circuits or '-'} | dead letters: {dlq}")

    def events(self) -> None:
        """Print the supervision events recorded since the last call."""
        for entry_id, fields in self.runtime.store.stream_range(self.runtime.keys.key("events"), 200):
            if _newer(entry_id, self.last_event):
                self.last_event = entry_id
                detail = " ".join(f"{k}={fields[k]}" for k in ("child", "reason", "action", "outcome", "queues",
                                                               "old_state", "new_state") if fields.get(k))
                where = fields.get("domain") or fields.get("name") or ""
                print(f"    event {fields.get('type', '?'):<11} {where}: {detail}")

    def wait(self, done: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        """Wait for ``done``, printing the live status once a second."""
        deadline = time.monotonic() + timeout_s
        next_print = 0.0
        while not done():
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: timed out waiting for {what}")
            if time.monotonic() >= next_print:
                print("  " + self.status())
                next_print = time.monotonic() + 1.0
            time.sleep(0.1)
        print("  " + self.status())
        self.events()

    def _restarts(self, queue: str) -> int:
        totals = self.runtime.store.hgetall(self.runtime.keys.key("restart-totals"))
        return int(totals.get(queue, 0))

    def _paused(self, *queues: str) -> bool:
        from prismatic_celery.cli.status import tree_state

        state = tree_state(self.runtime)
        return any(c["paused"] for d in state["domains"] for c in d["children"] if c["queue"] in queues)

    def _how_resumed(self) -> str:
        """Why the rest_for_one pauses ended, from the event stream: the child's success, or their expiry."""
        entries = self.runtime.store.stream_range(self.runtime.keys.key("events"), 200)
        recovered = any(f.get("type") == "resume" and f.get("reason") == "child_recovered" for _, f in entries)
        return "resumed when it succeeded again" if recovered else "resumed when their pause window ended"

    def _still_paused(self, *queues: str) -> str:
        """What the status says of ``queues`` now, in the words the status line uses."""
        paused = [q for q in queues if self._paused(q)]
        return f"paused again now: {','.join(paused)}" if paused else "the status shows them running"

    def send(self, queue: str, count: int, fault: str | None = None, start: int = 0) -> list[Any]:
        task = self.app.tasks[f"platform.{queue}"]
        return [task.apply_async((start + i, fault)) for i in range(count)]

    @staticmethod
    def all_done(results: list[Any]) -> Callable[[], bool]:
        return lambda: all(r.ready() for r in results)

    # -- the scenario ----------------------------------------------------------------------------
    def run(self) -> None:
        from .app import TREE

        self.step(1, "steady state: one task per child")
        results = [r for spec in TREE.values() for q in spec["children"] for r in self.send(q, 1)]
        self.wait(self.all_done(results), timeout_s=30, what="the first round")
        print("  all 15 children answered")

        self.step(2, "dependency outage: the external API fails for 6 s")
        self.dependency.down = True
        calls = self.send("adapter_registry", 6, "dependency") + self.send("source_manager", 6, "dependency", 100)
        outage_end = time.monotonic() + 6
        self.wait(lambda: time.monotonic() >= outage_end, timeout_s=10, what="the outage")
        self.dependency.down = False
        self.wait(self.all_done(calls), timeout_s=40, what="the deferred calls")
        print(f"  calls that reached the dead API: {self.dependency.calls_while_down} "
              f"(12 tasks; the circuit opened after 3 failures and deferred the rest)")

        if self.real:
            self.step(3, "poison message: a task that kills its process")
            poison = self.send("case_manager", 1, "poison", 900)[0]
            normal = self.send("case_manager", 10)
            self.wait(lambda: self.runtime.dlq.get("dd", poison.id) is not None and all(r.ready() for r in normal),
                      timeout_s=40, what="the quarantine")
            print("  quarantined after 3 deliveries; the 10 other case_manager tasks completed")
        else:
            self.step(3, "poison message: skipped (it would kill the embedded worker's own process)")

        self.step(4, "a bad deploy of storage_coordinator: every message fails once (core, rest_for_one)")
        single = self.send("storage_coordinator", 1, "corrupt", 400)
        self.wait(self.all_done(single), timeout_s=20, what="one failed message")
        print("  one failed message: re-run by its remediation, the child keeps running (a message failure)")
        corrupt = self.send("storage_coordinator", 30, "corrupt", 500)
        self.wait(lambda: self._restarts("storage_coordinator") > 0, timeout_s=30, what="the child to fail")
        later = self.send("cache_manager", 3) + self.send("telemetry_collector", 3)
        self.wait(self.all_done(corrupt + later), timeout_s=60, what="core to recover")
        self.wait(lambda: not self._paused("cache_manager", "telemetry_collector"), timeout_s=30,
                  what="the siblings to resume")
        print(f"  storage_coordinator failed by rate and restarted ({self._restarts('storage_coordinator')} "
              f"restart(s)); cache_manager and telemetry_collector were paused, then {self._how_resumed()}; "
              f"{self._still_paused('cache_manager', 'telemetry_collector')}")

        self.step(5, "memory hog in mendel_engine (evolution)")
        hog = self.send("mendel_engine", 1, "memory", 700)[0]
        self.wait(hog.ready, timeout_s=30, what="the memory hog")
        print(f"  re-ran after recycling its process: {hog.get(timeout=5)}")

        self.step(6, "load spike: 300 tasks on security")
        spike = [r for q in TREE["security"]["children"] for r in self.send(q, 100)]
        self.wait(self.all_done(spike), timeout_s=60, what="the spike to drain")
        print("  drained; other domains kept their own queues and slots")

        self.step(7, "the same failures again: the platform has learned")
        self.dependency.down = True
        again = self.send("adapter_registry", 4, "dependency", 200)
        blip_end = time.monotonic() + 3
        self.wait(lambda: time.monotonic() >= blip_end, timeout_s=6, what="the second outage")
        self.dependency.down = False
        relapse = self.send("storage_coordinator", 5, "corrupt", 800)
        self.wait(self.all_done(again + relapse), timeout_s=40, what="recovery")
        print("  the bad deploy's failure is a known pattern now: its proven remediation is applied at once")

        self.step(8, "knowledge")
        from prismatic_celery.cli.render import render_state
        from prismatic_celery.cli.status import tree_state

        print(render_state(tree_state(self.runtime)))
        learning = self.runtime.learning
        if learning is not None:
            for key, value in learning.metrics.snapshot().to_json().items():
                print(f"  {key:<26} {value}")


def _newer(entry_id: str, than: str) -> bool:
    def parts(value: str) -> tuple[int, int]:
        head, _, tail = value.partition("-")
        return int(head or 0), int(tail or 0)

    return parts(entry_id) > parts(than)


@contextlib.contextmanager
def _worker(app: Any, *, real: bool) -> Iterator[None]:
    if real:
        from prismatic_celery.testing import WorkerProcess

        worker = WorkerProcess("examples.prismatic_platform.app", hostname="demo@prismatic", pool="prefork",
                               concurrency=4, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
        worker.start()
        try:
            worker.wait_ready(app)
            yield
        finally:
            worker.stop()
    else:
        from celery.contrib.testing.worker import start_worker

        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
            yield


def main() -> int:
    url = os.environ.get("PRISMATIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    real = _redis_answers(url)
    if not real:
        os.environ["PRISMATIC_EMBEDDED"] = "1"
    source = f"Redis at {url} (a prefork worker, 4 processes)" if real else \
        f"the embedded default: no Redis answered at {url} (in-memory broker and store, a solo worker)"
    print(f"prismatic-celery demo: using {source}")

    from prismatic_celery.cli.render import render_tree
    from prismatic_celery.runtime import get_runtime

    from .app import app
    from .dependency import FakeDependency

    runtime = get_runtime(app)
    assert runtime is not None
    print(render_tree(runtime.supervisor.describe()))
    if real:
        for key in runtime.store.scan(runtime.keys.pattern()):
            runtime.store.delete(key)
    dependency = FakeDependency().start()
    started = time.monotonic()
    try:
        with _worker(app, real=real):
            Demo(app, runtime, dependency, real=real).run()
    finally:
        dependency.stop()
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
