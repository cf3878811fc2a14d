"""A child's executions in a sliding window: the evidence that decides whether the child failed.

A child is a queue running many messages, so one failed message says nothing about
the child. The child *fails* (OTP's crash, what strategies and budgets act on) when
its recent executions fail at a high rate: at least ``prismatic_child_failure_rate``
of them, among at least ``prismatic_child_min_executions`` executions within the last
``prismatic_child_window_s`` seconds, counted across the cluster.

The window is the hash ``prismatic:{<ns>}:executions:<queue>`` with one field per second
and outcome (``<second>:ok``, ``<second>:fail``, store clock). Failures are added by
the crash decision itself (``scripts/restart.lua``, one round trip it already makes);
successes are counted in each process's memory and added once per
:data:`FLUSH_INTERVAL_S` by a background thread, never per task: an add that never reads
the window (``scripts/executions.lua``, one HINCRBY per child). At its first flush, after an
outage of the store, and then at most every half window, a process's flush of a child also keeps house:
it deletes the buckets that left the window and refreshes the key's expiry (twice the
window), so the key outlives its last flush by at least 1.5 windows and a busy process sends three
commands a second per child, not five. A crash also carries
its own process's unflushed successes, so the window it judges is as fresh as it can be.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ..log import RateLimitedWarning, get_logger
from ..store import MemoryStore, Script, Store
from ..store.base import OutageWatch, Scalar
from ..store.keys import Keys

__all__ = ["EXECUTIONS", "FLUSH_INTERVAL_S", "PRELUDE", "ExecutionWindow", "add_successes", "count_executions",
           "executions_key", "failed"]

logger = get_logger("window")

#: How often each process adds its successes to the windows (seconds). A window judged by a crash
#: may miss at most this long of other processes' successes, a tenth of the default 10 s window.
FLUSH_INTERVAL_S = 1.0
PRELUDE = Path(__file__).parent / "scripts" / "window.lua"


def executions_key(keys: Keys, queue: str) -> str:
    """``prismatic:{<ns>}:executions:<queue>``: the child's execution window (hash)."""
    return keys.key("executions", queue)


def failed(successes: int, failures: int, *, min_executions: int, failure_rate: float) -> bool:
    """The child-failure rule: enough executions, and enough of them failed."""
    total = successes + failures
    return total >= min_executions and failures >= failure_rate * total


def _drop_other_type(store: MemoryStore, key: str) -> int:
    """Delete ``key`` when it holds something other than a hash; 1 when it did."""
    raw = store.raw(key)
    if raw is not None and not isinstance(raw, dict):
        store.delete(key)
        return 1
    return 0


def count_executions(store: MemoryStore, key: str, now: float, window_s: float, add_ok: int,
                     add_fail: int) -> tuple[int, int, int]:
    """The Python twin of ``executions`` in ``scripts/window.lua``: successes, failures, foreign flag."""
    foreign = _drop_other_type(store, key)
    second = math.floor(now)
    increments = {f"{second}:ok": add_ok, f"{second}:fail": add_fail}
    store.hincr(key, {field: n for field, n in increments.items() if n > 0})
    oldest = second - max(1, math.ceil(window_s)) + 1
    ok = fail = 0
    stale = []
    for field, value in store.hgetall(key).items():
        at, _, what = field.partition(":")
        if not at.isdigit() or what not in ("ok", "fail") or not value.lstrip("-").isdigit():
            stale.append(field)
            foreign = 1
        elif int(at) < oldest:
            stale.append(field)
        elif what == "ok":
            ok += int(value)
        else:
            fail += int(value)
    store.hdel(key, *stale)
    if store.hgetall(key):
        store.expire(key, window_s * 2)
    else:
        store.delete(key)
    return ok, fail, foreign


def add_successes(store: MemoryStore, key: str, now: float, window_s: float, add_ok: int, *,
                  housekeep: bool = True) -> int:
    """The Python twin of one key of ``scripts/executions.lua``: add, and keep house when asked;
    1 when the key held something foreign."""
    foreign = _drop_other_type(store, key)
    second, span = math.floor(now), max(1, math.ceil(window_s))
    field = f"{second}:ok"
    raw = store.raw(key)
    if isinstance(raw, dict) and field in raw and not str(raw[field]).lstrip("-").isdigit():
        store.hdel(key, field)
        foreign = 1
    store.hincr(key, {field: add_ok})
    if housekeep:
        store.hdel(key, *(f"{s}:{what}" for s in range(second - 3 * span + 1, second - span + 1)
                          for what in ("ok", "fail")))
        store.expire(key, window_s * 2)
    return foreign


def _flush_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    now, window_s, flags = store.clock(), float(args[0]), args[1 + len(keys):]
    return sum(add_successes(store, key, now, window_s, int(args[1 + i]),
                             housekeep=i >= len(flags) or str(flags[i]) != "0") for i, key in enumerate(keys))


EXECUTIONS = Script.from_file(Path(__file__).parent / "scripts" / "executions.lua", _flush_twin)


class ExecutionWindow:
    """One process's successes per child, not yet in the store (thread-safe; no I/O until :meth:`flush`)."""

    def __init__(self, store: Store, keys: Keys, window_s: float, *, lock: threading.Lock | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.keys = keys
        self.window_s = window_s
        self.clock = clock
        self._housekept_at: dict[str, float] = {}
        """When this process last kept house in each child's window (its clock)."""
        self._outages = OutageWatch(store)
        self.lock = lock or threading.Lock()
        """Guards :attr:`pending` (a process's outcome counters share theirs: one lock per count)."""
        self.pending: Counter[str] = Counter()
        """Successes per child not yet flushed; changed only under :attr:`lock`."""
        self._foreign = RateLimitedWarning()

    def take(self, queue: str) -> int:
        """The successes of ``queue`` not yet flushed, handed to the caller (who adds them to the window)."""
        with self.lock:
            return self.pending.pop(queue, 0)

    def flush(self) -> None:
        """Add every pending success to its window (one script call; nothing when nothing is pending)."""
        with self.lock:
            pending, self.pending = self.pending, Counter()
        queues = sorted(q for q, n in pending.items() if n > 0)
        if not queues:
            return
        store, now = self.store, self.clock()
        outage = self._outages.since()  # the server may be back empty: a key it gets now has no expiry
        due = [outage or now - self._housekept_at.get(q, -math.inf) >= self.window_s / 2 for q in queues]
        foreign = store.run(EXECUTIONS, [executions_key(self.keys, q) for q in queues],
                            [self.window_s, *(pending[q] for q in queues), *(int(d) for d in due)])
        self._outages.wrote()
        if not store.degraded:
            self._housekept_at.update((q, now) for q, d in zip(queues, due, strict=True) if d)
        if isinstance(foreign, int) and foreign:
            self._foreign.warn("store-corrupt-value", key=self.keys.key("executions", "*"),
                               detail="foreign data in an execution window was removed")

