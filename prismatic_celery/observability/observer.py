"""Outcome counters: observation and bookkeeping only (they cannot change a task's fate).

Counters are kept in-process and flushed to Redis by a background thread every
``prismatic_stats_flush_s`` seconds, never per task; the same thread adds each
supervised child's successes to its execution window every
:data:`~prismatic_celery.supervision.window.FLUSH_INTERVAL_S` (the evidence that a
child works, :mod:`prismatic_celery.supervision.window`). A supervised task counts
its own start and success in ``SupervisedTask.__call__`` (no signal receiver, so
Celery's tracer skips the ``task_prerun``/``task_success`` dispatch for every
task); failures, retries, revocations and rejections come from Celery's
signals. A message put back before its body ran (a paused queue, a full
bulkhead, an open circuit) counts as ``deferred``: neither a start nor a
retry. Under prefork those fire in the pool child, and the
``WorkerLostError``/time-limit failures in the main process; each process
flushes its own counters, so every outcome is counted once whichever pool runs it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter
from typing import Any

from celery import Celery, signals

from ..log import get_logger, log_event
from ..runtime import Runtime, get_runtime
from ..supervision.window import FLUSH_INTERVAL_S, ExecutionWindow

__all__ = ["DEFERRED_MARK", "OUTCOMES", "SUCCEEDED_MARK", "TaskStats", "connect_signals", "count_outcome",
           "stats_for"]

logger = get_logger("observer")

OUTCOMES = ("started", "succeeded", "failed", "retried", "deferred", "revoked", "rejected")
UNSUPERVISED = "-"
#: How long a worker's counters outlive its last flush (a hostname that stopped reporting, e.g. a gone pod).
STATS_TTL_S = 7 * 24 * 3600.0


class TaskStats:
    """Per-process outcome counters per (hostname, queue), flushed in the background."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._reset()
        _all_stats.add(self)

    def _reset(self) -> None:
        """Fresh state: at start, and in a forked child (the parent's counts are the parent's)."""
        self._pending: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._pid = -1
        self._wake = threading.Event()
        settings = self.runtime.settings
        self.window = ExecutionWindow(self.runtime.store, self.runtime.keys, settings.child_window_s)

    def count(self, hostname: str | None, queue: str, outcome: str, amount: int = 1) -> None:
        """Count ``amount`` outcomes in memory (no I/O); starts this process's flusher if needed."""
        with self._lock:
            self._pending[(hostname or "unknown", f"{queue}:{outcome}")] += amount
            if outcome == "succeeded" and amount > 0 and queue != UNSUPERVISED:
                self.window.success(queue)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="prismatic-stats", daemon=True).start()

    def flush(self) -> None:
        """Write pending counters to ``prismatic:{<ns>}:stats:<hostname>`` (HINCRBY, pipelined)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        by_host: dict[str, dict[str, int]] = {}
        for (hostname, field), amount in pending.items():
            if amount:
                by_host.setdefault(hostname, {})[field] = amount
        for hostname, increments in by_host.items():
            self.runtime.store.hincr(self.runtime.keys.key("stats", hostname), increments, ttl_s=STATS_TTL_S)

    def _loop(self) -> None:
        pid = os.getpid()
        flushed_at = time.monotonic()
        while self._pid == pid:
            self._wake.wait(min(FLUSH_INTERVAL_S, self.runtime.settings.stats_flush_s))
            self._wake.clear()
            try:
                self.window.flush()
                if time.monotonic() - flushed_at >= self.runtime.settings.stats_flush_s:
                    flushed_at = time.monotonic()
                    self.flush()
            except Exception as exc:  # never let the flusher die silently
                log_event(logging.ERROR, "stats-flush-failed", logger, error=repr(exc)[:300])
            time.sleep(0)


_STATS_ATTR = "_prismatic_stats"
_all_stats: weakref.WeakSet[TaskStats] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for stats in list(_all_stats):
        stats._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


def stats_for(runtime: Runtime) -> TaskStats:
    """The counters of ``runtime`` (one per process and app)."""
    stats = getattr(runtime, _STATS_ATTR, None)
    if not isinstance(stats, TaskStats):
        stats = TaskStats(runtime)
        setattr(runtime, _STATS_ATTR, stats)
        track(runtime)
    return stats


def _runtime_of(sender: Any) -> Runtime | None:
    app = getattr(sender, "app", None)
    if not isinstance(app, Celery):
        return None
    try:
        return get_runtime(app)
    except Exception:  # bad configuration is reported at worker start, not per task
        return None


SUCCEEDED_MARK = "_prismatic_succeeded"  # set on a request whose task body returned (and was counted)
DEFERRED_MARK = "_prismatic_deferred"  # set on a request put back before its body ran (not a start, not a retry)


def count_outcome(runtime: Runtime, request: Any, queue: str | None, outcome: str, amount: int = 1) -> None:
    """Count ``amount`` outcomes of the execution ``request`` on ``queue`` (None: unsupervised)."""
    stats_for(runtime).count(getattr(request, "hostname", None), queue or UNSUPERVISED, outcome, amount)


def _count_task(task: Any, outcome: str, amount: int = 1) -> None:
    runtime = _runtime_of(task)
    if runtime is None:
        return
    located = runtime.locate_task(task)
    count_outcome(runtime, task.request, located[1].queue if located else None, outcome, amount)


def _guarded(fn: Any) -> Any:
    def handler(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # observation must never disturb the task
            log_event(logging.ERROR, "observer-failed", logger, handler=fn.__name__, error=repr(exc)[:300])

    handler.__name__ = fn.__name__
    return handler


@_guarded
def on_task_failure(sender: Any = None, **_: Any) -> None:
    _count_task(sender, "failed")
    if getattr(getattr(sender, "request", None), SUCCEEDED_MARK, False):
        # The body returned (counted as a success) and Celery then failed the task, e.g. its
        # result could not be encoded: it is a failure, not a success.
        _count_task(sender, "succeeded", -1)


def _count_delivery(sender: Any, carrier: Any, task_name: str | None, hostname: str | None, outcome: str) -> None:
    """Count an outcome signalled with a request or message (``carrier``) rather than a running task."""
    runtime = _runtime_of(sender)
    if runtime is None:
        return
    delivery = getattr(carrier, "delivery_info", None)
    located = runtime.locate(delivery if isinstance(delivery, dict) else None, task_name)
    stats_for(runtime).count(hostname, located[1].queue if located else UNSUPERVISED, outcome)


@_guarded
def on_task_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    outcome = "deferred" if getattr(request, DEFERRED_MARK, False) else "retried"
    _count_delivery(sender, request, getattr(sender, "name", None), getattr(request, "hostname", None), outcome)


@_guarded
def on_task_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    _count_delivery(sender, request, getattr(sender, "name", None), getattr(request, "hostname", None), "revoked")


@_guarded
def on_task_rejected(sender: Any = None, message: Any = None, **_: Any) -> None:
    _count_delivery(sender, message, None, getattr(sender, "hostname", None), "rejected")


@_guarded
def on_process_shutdown(**_: Any) -> None:
    for runtime in list(_flush_targets):
        stats = stats_for(runtime)
        stats.window.flush()
        stats.flush()


_flush_targets: list[Runtime] = []


def track(runtime: Runtime) -> None:
    """Flush ``runtime``'s counters when this process shuts down."""
    if runtime not in _flush_targets:
        _flush_targets.append(runtime)


_connected = False


def connect_signals() -> None:
    """Connect the observation handlers once per process (idempotent)."""
    global _connected
    if _connected:
        return
    _connected = True
    for signal, handler in (
        (signals.task_failure, on_task_failure),
        (signals.task_retry, on_task_retry),
        (signals.task_revoked, on_task_revoked),
        (signals.task_rejected, on_task_rejected),
        (signals.worker_process_shutdown, on_process_shutdown),
        (signals.worker_shutdown, on_process_shutdown),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"prismatic.{handler.__name__}")
