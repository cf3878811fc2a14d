"""What a task that just works costs in the plugin's code: Python bytecode instructions and calls, counted.

Run: ``python -m benchmarks.success_path [--top 12]``

CPU seconds on a shared machine move by several percent from run to run (see :mod:`benchmarks.overhead`); the
number of bytecode instructions the interpreter runs does not. This counts them with ``sys.settrace`` (opcode
events) for one supervised execution of ``bench.noop``, after a warm-up, in each variant of
:mod:`benchmarks.apps` (``plain``: Celery alone; ``plugin``: installed, default configuration, the queue
supervised), on the two paths a message takes:

* ``pool``: the pool process runs the task through Celery's tracer (``build_tracer``, as a prefork pool process
  does); the plugin's part is ``SupervisedTask.__call__`` and everything it calls;
* ``main``: the worker's main process admits the message (the shedding guard, its queue shedding as in the
  overhead benchmark's full queue) and reads that a pool process accepted it (``Request.on_accepted``, which the
  plugin leaves to Celery).

The plugin's store is a private ``redis-server`` (the success path sends it nothing after the warm-up). Output:
per path and variant the instructions and calls, the plugin's extra, its costliest functions, then one JSON
line::

    {"pool_plain": n, "pool_plugin": n, "pool_extra": n, "main_plain": n, "main_plugin": n, "main_extra": n}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from celery import Celery
from celery.app.trace import build_tracer
from celery.utils.imports import symbol_by_name
from celery.worker.request import create_request_cls
from kombu import Message

from benchmarks.apps import DOMAINS, NOOP, QUEUE, VARIANTS, make_app
from benchmarks.harness import HOST, ROOT, redis_server

WARMUP = 50  # executions before the counted one: first-call costs (a view's first read, a memo) are not per task


class Counted:
    """Bytecode instructions and calls per function while tracing."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        frame.f_trace_opcodes = True
        filename = frame.f_code.co_filename.split("site-packages/")[-1].removeprefix(f"{ROOT}/")
        name = f"{filename}:{frame.f_code.co_name}"
        if event == "call":
            self.calls[name] += 1
        elif event == "opcode":
            self.ops[name] += 1
        return self

    def run(self, call: Callable[[], object]) -> None:
        sys.settrace(self)
        try:
            call()
        finally:
            sys.settrace(None)


def _request(i: int) -> dict[str, object]:
    return {"id": f"id-{i}", "hostname": "bench@success", "is_eager": False,
            "delivery_info": {"exchange": "", "routing_key": QUEUE, "priority": 0, "redelivered": False}}


def pool_path(app: Celery) -> Counted:
    """One execution through Celery's tracer, as a prefork pool process runs it."""
    if app.conf.get("bench_variant") == "plugin":
        from prismatic_celery.supervision.slots import RunningSlots
        from prismatic_celery.worker.state import ensure_worker_state

        # a prefork worker makes it before its pool forks; this process writes as the pool's process 0
        ensure_worker_state(app).slots = RunningSlots(index=lambda: 0, domains=list(DOMAINS))
    trace = build_tracer(NOOP, app.tasks[NOOP], hostname="bench@success", eager=False, propagate=False, app=app)
    for i in range(WARMUP):
        trace(f"w-{i}", (1, 10**9, 0), {}, _request(i))
    counted = Counted()
    counted.run(lambda: trace("counted", (1, 10**9, 0), {}, _request(WARMUP)))
    return counted


class _Pool:
    def apply_async(self, *args: object, **kwargs: object) -> None:
        """The request is never sent anywhere: only its admission and acceptance are counted."""


def main_path(app: Celery) -> Counted:
    """One message admitted by the worker's main process and accepted by a pool process."""
    task = app.tasks[NOOP]
    request_cls: Any = create_request_cls(symbol_by_name(task.Request), task, _Pool(), "bench@success", None,
                                          app=app)
    admit: Callable[[object], bool] = lambda request: True  # noqa: E731  (plain Celery admits every message)
    if app.conf.get("bench_variant") == "plugin":
        admit = _plugin_admission(app)

    def message(i: int) -> Message:
        headers, properties, body, _ = app.amqp.as_task_v2(f"id-{i}", NOOP, args=(1, 10**9, 0), kwargs={})
        return Message(body=json.dumps(body), headers=headers, content_type="application/json",
                       content_encoding="utf-8", properties=properties, channel=None,
                       delivery_info={"exchange": "", "routing_key": QUEUE, "priority": 0, "redelivered": False})

    def one(i: int, counted: Counted | None) -> None:
        request = request_cls(message(i), app=app, hostname="bench@success", task=task)

        def path() -> None:
            admit(request)
            request.on_accepted(4242, time.time())

        if counted is None:
            path()
        else:
            counted.run(path)

    for i in range(WARMUP):
        one(i, None)
    counted = Counted()
    one(WARMUP, counted)
    return counted


def _plugin_admission(app: Celery) -> Callable[[object], bool]:
    """The plugin's shedding guard, its queue shown as shedding."""
    from prismatic_celery.admission.shedding.state import ShedState
    from prismatic_celery.runtime import get_runtime
    from prismatic_celery.worker.services import shed_guard

    runtime = get_runtime(app)
    assert runtime is not None
    guard = shed_guard(runtime)
    assert guard is not None, "shedding is on by default for a supervised queue"
    fields = {f.name: None for f in dataclasses.fields(ShedState)}
    guard.view._items = {QUEUE: ShedState(**{**fields, "threshold": 1000})}  # type: ignore[arg-type]
    guard.view._read_at = float("inf")  # the view is never read again: the queue sheds throughout
    return guard.admit  # type: ignore[return-value]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.success_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=12, help="the plugin's costliest functions shown per path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, int] = {}
    with redis_server("store") as port:
        for path, measure in (("pool", pool_path), ("main", main_path)):
            counts: dict[str, Counted] = {}
            for variant in VARIANTS:
                app = make_app(variant, "memory://", store_url=f"redis://{HOST}:{port}/0")
                app.conf.bench_variant = variant
                app.finalize()
                try:
                    counts[variant] = measure(app)
                finally:
                    app.close()
                ops, calls = sum(counts[variant].ops.values()), sum(counts[variant].calls.values())
                result[f"{path}_{variant}"] = ops
                print(f"{path:<4} {variant:<6} {ops:6d} instructions {calls:4d} calls", flush=True)
            extra = result[f"{path}_plugin"] - result[f"{path}_plain"]
            result[f"{path}_extra"] = extra
            print(f"{path:<4} plugin's extra: {extra} instructions; its costliest functions:")
            plugin = counts["plugin"].ops - counts["plain"].ops
            for name, ops in plugin.most_common(args.top):
                print(f"       {ops:5d}  {name}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
