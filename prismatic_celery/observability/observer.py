"""Outcome counters: observation and bookkeeping only (they cannot change a task's fate).

Counters are kept in-process and flushed to Redis by a background thread every
``prismatic_stats_flush_s`` seconds, never per task; the same thread adds each
supervised child's successes to its execution window every
:data:`~prismatic_celery.supervision.window.FLUSH_INTERVAL_S` (the evidence that a
child works, :mod:`prismatic_celery.supervision.window`). A supervised task counts
its own start and success in ``SupervisedTask.__call__`` (no signal receiver, so
Celery's tracer skips the ``task_prerun``/``task_success`` dispatch for every
task), both as its execution ends (a task still running is not counted yet).
Failures, retries, revocations and rejections come from Celery's signals. A
message put back before its body ran (a paused queue, a full bulkhead, an open
circuit) counts as ``deferred``: neither a start nor a retry. Under prefork
those fire in the pool child, and the ``WorkerLostError``/time-limit failures
in the main process (an execution that killed its process is a failure
without a start); each process
flushes its own counters, so every outcome is counted once whichever pool runs it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import Celery, signals

from ..log import get_logger, log_event
from ..supervision.window import FLUSH_INTERVAL_S, ExecutionWindow

if TYPE_CHECKING:
    from ..store import Store
    from ..store.keys import Keys
    from ..supervision.locate import AnyTask, Locator

__all__ = ["DEFERRED_MARK", "OUTCOMES", "SUCCEEDED_MARK", "UNSUPERVISED", "Observer", "TaskStats", "connect_signals"]

logger = get_logger("observer")

OUTCOMES = ("started", "succeeded", "failed", "retried", "deferred", "revoked", "rejected")
UNSUPERVISED = "-"
#: How long a worker's counters outlive its last flush (a hostname that stopped reporting, e.g. a gone pod).
STATS_TTL_S = 7 * 24 * 3600.0


class TaskStats:
    """Per-process outcome counters per (hostname, queue), flushed in the background."""

    def __init__(self, store: Store, keys: Keys, *, window_s: float, flush_s: float) -> None:
        self.store, self.keys = store, keys
        self.window_s, self.flush_s = window_s, flush_s
        self._reset()
        _all_stats.add(self)

    def _reset(self) -> None:
        """Fresh state: at start, and in a forked child (the parent's counts are the parent's)."""
        self._pending: Counter[tuple[str, str, str]] = Counter()  # (hostname, queue, outcome)
        self._runs: Counter[tuple[str | None, str, bool]] = Counter()  # (hostname, queue, succeeded): count_run
        self._lock = threading.Lock()
        self._pid = -1
        self._wake = threading.Event()
        self.window = ExecutionWindow(self.store, self.keys, self.window_s, lock=self._lock)
        self.counted = False

    def count(self, hostname: str | None, queue: str, outcome: str, amount: int = 1) -> None:
        """Count ``amount`` outcomes in memory (no I/O); starts this process's flusher if needed."""
        with self._lock:
            self._pending[(hostname or "unknown", queue, outcome)] += amount
            if outcome == "succeeded" and amount > 0 and queue != UNSUPERVISED:
                self.window.pending[queue] += amount  # the window shares this lock
            if self._pid < 0:  # the first count of this process (a fork resets it): no getpid per count
                self._start_flusher()

    def count_run(self, hostname: str | None, queue: str, succeeded: bool) -> None:
        """One execution whose body ran, counted as it ends: ``started``, and ``succeeded`` when it returned (one
        counter for both, split when flushed)."""
        with self._lock:
            self._runs[(hostname, queue, succeeded)] += 1
            if succeeded and queue != UNSUPERVISED:
                self.window.pending[queue] += 1  # the window shares this lock
            if self._pid < 0:
                self._start_flusher()

    def _start_flusher(self) -> None:
        """This process's first count (a fork resets it): its flusher thread starts (no getpid per count)."""
        self._pid = os.getpid()
        self.counted = True
        threading.Thread(target=self._loop, name="prismatic-stats", daemon=True).start()

    def take_successes(self, queue: str) -> int:
        """This process's successes of ``queue`` not yet flushed, handed to the caller (a failure's script call)."""
        return self.window.take(queue)

    def flush(self) -> None:
        """Write pending counters to ``prismatic:{<ns>}:stats:<hostname>`` (HINCRBY, pipelined)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            runs, self._runs = self._runs, Counter()
        for (hostname, queue, succeeded), amount in runs.items():
            pending[(hostname or "unknown", queue, "started")] += amount
            if succeeded:
                pending[(hostname or "unknown", queue, "succeeded")] += amount
        by_host: dict[str, dict[str, int]] = {}
        for (hostname, queue, outcome), amount in pending.items():
            if amount:
                by_host.setdefault(hostname, {})[f"{queue}:{outcome}"] = amount
        for hostname, increments in by_host.items():
            self.store.hincr(self.keys.key("stats", hostname), increments, ttl_s=STATS_TTL_S)

    def flush_all(self) -> None:
        """Flush the execution window and the counters (at shutdown)."""
        self.window.flush()
        self.flush()

    def _loop(self) -> None:
        pid = os.getpid()
        flushed_at = time.monotonic()
        while self._pid == pid:
            self._wake.wait(min(FLUSH_INTERVAL_S, self.flush_s))
            self._wake.clear()
            try:
                self.window.flush()
                if time.monotonic() - flushed_at >= self.flush_s:
                    flushed_at = time.monotonic()
                    self.flush()
            except Exception as exc:  # never let the flusher die silently
                log_event(logging.ERROR, "stats-flush-failed", logger, error=repr(exc)[:300])
            time.sleep(0)


class Observer:
    """What the signal handlers and ``SupervisedTask`` count with: the counters and where a delivery belongs."""

    def __init__(self, stats: TaskStats, locator: Locator) -> None:
        self.stats = stats
        self.locator = locator

    def count(self, request: object, queue: str | None, outcome: str, amount: int = 1) -> None:
        """Count ``amount`` outcomes of the execution ``request`` on ``queue`` (None: unsupervised)."""
        hostname = getattr(request, "hostname", None)
        self.stats.count(hostname if isinstance(hostname, str) else None, queue or UNSUPERVISED, outcome, amount)

    def count_task(self, task: AnyTask, outcome: str, amount: int = 1) -> None:
        """Count an outcome of ``task``'s running request."""
        located = self.locator.locate_task(task)
        self.count(task.request, located[1].queue if located else None, outcome, amount)

    def count_delivery(self, carrier: object, task_name: str | None, hostname: str | None, outcome: str) -> None:
        """Count an outcome signalled with a request or message (``carrier``) rather than a running task."""
        delivery = getattr(carrier, "delivery_info", None)
        located = self.locator.locate(delivery if isinstance(delivery, dict) else None, task_name)
        self.stats.count(hostname, located[1].queue if located else UNSUPERVISED, outcome)


#: Finds the observer of an app (None: not supervised); handed to :func:`connect_signals` by ``install``.
Resolve = Callable[[Celery], "Observer | None"]
_STATS_ATTR = "_prismatic_stats"
_all_stats: weakref.WeakSet[TaskStats] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for stats in list(_all_stats):
        stats._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


_resolvers: list[Resolve] = []


def _observer_of(sender: object) -> Observer | None:
    app = getattr(sender, "app", None)
    if not isinstance(app, Celery) or not _resolvers:
        return None
    try:
        return _resolvers[0](app)
    except Exception:  # bad configuration is reported at worker start, not per task
        return None


SUCCEEDED_MARK = "_prismatic_succeeded"  # set on a request whose task body returned (and was counted)
DEFERRED_MARK = "_prismatic_deferred"  # set on a request put back before its body ran (not a start, not a retry)


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    def handler(*args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # observation must never disturb the task
            log_event(logging.ERROR, "observer-failed", logger, handler=fn.__name__, error=repr(exc)[:300])

    handler.__name__ = fn.__name__
    return handler


@_guarded
def on_task_failure(sender: AnyTask | None = None, **_: object) -> None:
    observer = _observer_of(sender)
    if observer is None or sender is None:
        return
    observer.count_task(sender, "failed")
    if getattr(sender.request, SUCCEEDED_MARK, False):
        # The body returned (counted as a success) and Celery then failed the task, e.g. its
        # result could not be encoded: it is a failure, not a success.
        observer.count_task(sender, "succeeded", -1)


def _count_delivery(sender: object, carrier: object, task_name: str | None, hostname: object, outcome: str) -> None:
    observer = _observer_of(sender)
    if observer is not None:
        observer.count_delivery(carrier, task_name, hostname if isinstance(hostname, str) else None, outcome)


@_guarded
def on_task_retry(sender: object = None, request: object = None, **_: object) -> None:
    outcome = "deferred" if getattr(request, DEFERRED_MARK, False) else "retried"
    _count_delivery(sender, request, _name(sender), getattr(request, "hostname", None), outcome)


@_guarded
def on_task_revoked(sender: object = None, request: object = None, **_: object) -> None:
    _count_delivery(sender, request, _name(sender), getattr(request, "hostname", None), "revoked")


@_guarded
def on_task_rejected(sender: object = None, message: object = None, **_: object) -> None:
    _count_delivery(sender, message, None, getattr(sender, "hostname", None), "rejected")


def _name(sender: object) -> str | None:
    name = getattr(sender, "name", None)
    return name if isinstance(name, str) else None


@_guarded
def on_process_shutdown(**_: object) -> None:
    for stats in list(_all_stats):
        if stats.counted:
            stats.flush_all()


_connected = False


def connect_signals(resolve: Resolve) -> None:
    """Connect the observation handlers once per process (idempotent); ``resolve`` finds an app's observer."""
    global _connected
    if not _resolvers:
        _resolvers.append(resolve)
    if _connected:
        return
    _connected = True
    for signal, handler in (
        (signals.task_failure, on_task_failure),
        (signals.task_retry, on_task_retry),
        (signals.task_revoked, on_task_revoked),
        (signals.task_rejected, on_task_rejected),
        (signals.worker_process_shutdown, on_process_shutdown),  # a pool process (the main one: StatsStep)
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"prismatic.{handler.__name__}")
