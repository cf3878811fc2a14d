"""Bulkheads inside a worker: a domain may hold at most ``concurrency`` of its pool slots.

``Domain.concurrency`` caps the tasks of one domain running at once **per
worker**, so a slow dependency cannot absorb every slot of a shared worker;
``Domain.cluster_concurrency`` optionally caps them across the cluster. A task
over a cap is deferred: put back on its queue to run after
``prismatic_bulkhead_defer_s`` (plus jitter) with its retry count unchanged.
Nothing is dropped.

Per worker, the slots are a :class:`SlotTable` in shared memory created in the
worker's main process before the pool forks, so every prefork child (and
every thread of a threads pool) sees the same table. Each slot holds the
kernel thread id of its holder (for a prefork child, its pid): a slot whose
holder died (SIGKILL, OOM, time limit) is reclaimed, so a crash never leaks a
slot. Cluster-wide, the slots are leases in a Redis sorted set scored by
expiry (``prismatic:{<ns>}:leases:<domain>``), taken and released atomically
in Lua and renewed while the task runs: a dead worker's leases expire.

Under gevent/eventlet pools every green thread shares one kernel thread: the
per-worker cap is not enforced there (the cluster cap still is).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..log import get_logger, log_event
from ..store import MemoryStore, Script, Store
from ..store.base import Scalar
from ..store.keys import Keys
from ..supervision.requeue import can_requeue, requeue

if TYPE_CHECKING:
    from ..supervision.locate import AnyTask, Locator
    from ..supervision.tree import Supervisor

__all__ = ["BulkheadGuard", "ClusterLeases", "SlotTable", "lease_key"]

logger = get_logger("bulkhead")


def _alive(tid: int) -> bool:
    """True while the thread (or process) ``tid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(tid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SlotTable:
    """``capacity`` slots in shared memory, each empty (0) or holding its holder's kernel thread id.

    Create it before the pool forks; children inherit the memory and the lock.
    """

    def __init__(self, capacity: int, *, lock_timeout_s: float = 1.0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.lock_timeout_s = lock_timeout_s
        self._slots = multiprocessing.RawArray(ctypes.c_longlong, capacity)  # typecode "q"
        self._lock = multiprocessing.Lock()

    def acquire(self, token: int | None = None) -> int | None:
        """Take a slot for ``token`` (default: this thread); its index, -1 when full, None when unknown.

        A slot already held by ``token`` is taken again (a previous task of the
        same thread never released it); a slot whose holder died is reclaimed.
        None means the table's lock could not be taken in time: the caller runs
        the task uncapped rather than hang.
        """
        token = token or threading.get_native_id()
        if not self._lock.acquire(timeout=self.lock_timeout_s):
            return None
        try:
            slots = self._slots
            free = -1
            for index in range(self.capacity):
                holder = slots[index]
                if holder == token:
                    return index
                if holder == 0 and free < 0:
                    free = index
            if free < 0:  # full: reclaim the slot of a holder that died
                for index in range(self.capacity):
                    if not _alive(slots[index]):
                        log_event(logging.WARNING, "bulkhead-slot-reclaimed", logger, holder=slots[index])
                        free = index
                        break
            if free >= 0:
                slots[free] = token
            return free
        finally:
            self._lock.release()

    def release(self, index: int, token: int | None = None) -> None:
        """Free slot ``index`` if ``token`` (default: this thread) still holds it."""
        token = token or threading.get_native_id()
        if not self._lock.acquire(timeout=self.lock_timeout_s):
            return
        try:
            if 0 <= index < self.capacity and self._slots[index] == token:
                self._slots[index] = 0
        finally:
            self._lock.release()

    def holders(self) -> list[int]:
        """Thread ids holding a slot now (a snapshot)."""
        return [h for h in list(self._slots) if h]


def lease_key(keys: Keys, domain: str) -> str:
    """``prismatic:{<ns>}:leases:<domain>``: the domain's cluster-wide slot leases (zset, score = expiry ms)."""
    return keys.key("leases", domain)


_LEASE_LUA = """
-- Cluster-wide slot leases of one domain. KEYS[1] zset of lease tokens scored by expiry (ms, server clock)
-- ARGV: 1 op (acquire|renew|release), 2 cap, 3 ttl_ms, 4.. tokens
-- acquire: 1 when ARGV[4] holds a lease now, else 0; renew: the tokens no longer held; release: how many removed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, op, cap, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if op == 'release' then
  local removed = 0
  for i = 4, #ARGV do removed = removed + redis.call('ZREM', key, ARGV[i]) end
  return removed
end
if op == 'renew' then
  local lost = {}
  for i = 4, #ARGV do
    if redis.call('ZSCORE', key, ARGV[i]) then
      redis.call('ZADD', key, now + ttl, ARGV[i])
    else
      lost[#lost + 1] = ARGV[i]
    end
  end
  redis.call('PEXPIRE', key, ttl * 2)
  return lost
end
if not redis.call('ZSCORE', key, ARGV[4]) and redis.call('ZCARD', key) >= cap then
  return 0
end
redis.call('ZADD', key, now + ttl, ARGV[4])
redis.call('PEXPIRE', key, ttl * 2)
return 1
"""


def _lease_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int | list[str]:
    now = store.clock() * 1000
    leases = store.raw(keys[0])
    if not isinstance(leases, dict):
        leases = {}
        store.set_raw(keys[0], leases)
    for token in [m for m, expiry in leases.items() if expiry <= now]:
        del leases[token]
    op, cap, ttl = str(args[0]), int(args[1]), float(args[2])
    tokens = [str(a) for a in args[3:]]
    if op == "release":
        return sum(1 for token in tokens if leases.pop(token, None) is not None)
    if op == "renew":
        for token in tokens:
            if token in leases:
                leases[token] = now + ttl
        store.expire(keys[0], ttl * 2 / 1000)
        return [token for token in tokens if token not in leases]
    if tokens[0] not in leases and len(leases) >= cap:
        return 0
    leases[tokens[0]] = now + ttl
    store.expire(keys[0], ttl * 2 / 1000)
    return 1


LEASES = Script(name="leases", lua=_LEASE_LUA, python=_lease_twin)


class ClusterLeases:
    """Cluster-wide slots: at most ``cap`` leases per domain, each expiring unless renewed.

    While a process holds leases, a background thread renews them every third
    of ``lease_s`` (one script call per domain, whatever the task rate), and
    stops when none is held (``auto_renew=False``: call :meth:`renew` yourself).
    """

    def __init__(self, store: Store, keys: Keys, *, lease_s: float, auto_renew: bool = True) -> None:
        self.store = store
        self.keys = keys
        self.lease_s = lease_s
        self.auto_renew = auto_renew
        self._held: dict[str, tuple[str, int]] = {}  # token -> (domain, cap)
        self._lock = threading.Lock()
        self._renewer_pid = -1
        _all_leases.add(self)

    def _after_fork(self) -> None:
        self._held = {}
        self._lock = threading.Lock()
        self._renewer_pid = -1

    def acquire(self, domain: str, cap: int, token: str) -> bool:
        """Take one of the domain's ``cap`` leases for ``token``; False when all are held."""
        taken = bool(int(self.store.run(LEASES, [lease_key(self.keys, domain)],
                                        ["acquire", cap, int(self.lease_s * 1000), token]) or 0))
        if taken:
            with self._lock:
                self._held[token] = (domain, cap)
                if self.auto_renew and self._renewer_pid != os.getpid():
                    self._renewer_pid = os.getpid()
                    threading.Thread(target=self._renew_loop, name="prismatic-leases", daemon=True).start()
        return taken

    def release(self, domain: str, token: str) -> None:
        """Give the lease back."""
        with self._lock:
            self._held.pop(token, None)
        self.store.run(LEASES, [lease_key(self.keys, domain)], ["release", 0, 0, token])

    def renew(self) -> int:
        """Extend every lease this process holds (one call per domain); how many are still held.

        A lease found expired (the process stalled longer than ``lease_s``) is
        forgotten with a warning: its slot may already serve another task.
        """
        with self._lock:
            by_domain: dict[str, list[str]] = {}
            for token, (domain, _) in self._held.items():
                by_domain.setdefault(domain, []).append(token)
        held = 0
        for domain, tokens in by_domain.items():
            lost = {str(t) for t in self.store.run(LEASES, [lease_key(self.keys, domain)],
                                                   ["renew", 0, int(self.lease_s * 1000), *tokens]) or ()}
            with self._lock:
                gone = [t for t in lost if self._held.pop(t, None) is not None]
            if gone:
                log_event(logging.WARNING, "bulkhead-lease-lost", logger, domain=domain, lost=len(gone))
            held += len(tokens) - len(lost)
        return held

    def _renew_loop(self) -> None:
        pid = os.getpid()
        while self._renewer_pid == pid:
            time.sleep(self.lease_s / 3)
            with self._lock:
                if not self._held:  # nothing to renew: stop; the next acquire starts a new thread
                    self._renewer_pid = -1
                    return
            try:
                self.renew()
            except Exception as exc:  # the next period tries again; leases expire safely meanwhile
                log_event(logging.ERROR, "bulkhead-renew-failed", logger, error=repr(exc)[:300])


_all_leases: weakref.WeakSet[ClusterLeases] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for leases in list(_all_leases):
        leases._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Held(threading.local):
    """What the current thread holds for the task it runs."""

    def __init__(self) -> None:
        self.slot: tuple[SlotTable, int] | None = None
        self.lease: tuple[str, str] | None = None


class BulkheadGuard:
    """Holds a domain slot (and lease) around each task of a capped domain; defers the task when none is free.

    A stage of the task pipeline: ``after_run`` always follows a ``before_run`` that passed.
    """

    def __init__(self, store: Store, keys: Keys, supervisor: Supervisor, locator: Locator, *, lease_s: float,
                 defer_s: float) -> None:
        self.locator = locator
        domains = supervisor.domain_list
        self.tables = {d.name: SlotTable(d.concurrency) for d in domains if d.concurrency}
        self.cluster_caps = {d.name: int(getattr(d, "cluster_concurrency", None) or 0) for d in domains}
        self.cluster_caps = {name: cap for name, cap in self.cluster_caps.items() if cap}
        self.leases = ClusterLeases(store, keys, lease_s=lease_s)
        self.defer_s = defer_s
        self.deferred = 0
        self._held = _Held()
        self._host = socket.gethostname()
        self._last_log: dict[str, float] = {}

    @property
    def active(self) -> bool:
        """True when some domain is capped."""
        return bool(self.tables or self.cluster_caps)

    def before_run(self, task: AnyTask) -> None:
        """Take the domain's slot (and cluster lease); defer the task (raises Retry) when none is free."""
        if not can_requeue(task):
            return
        located = self.locator.locate_task(task)
        if located is None:
            return
        domain = located[0].name
        table = self.tables.get(domain)
        if table is not None:
            index = table.acquire()
            if index is not None and index < 0:
                self._defer(task, domain, "worker", table.capacity)
            if index is not None:
                self._held.slot = (table, index)
        cap = self.cluster_caps.get(domain)
        if cap:
            request = task.request
            token = f"{request.hostname or self._host}|{os.getpid()}|{threading.get_native_id()}|{request.id}"
            if not self.leases.acquire(domain, cap, token):
                self._release()
                self._defer(task, domain, "cluster", cap)
            self._held.lease = (domain, token)

    def after_run(self, task: AnyTask, failed: bool) -> None:
        """Give the slot and lease back."""
        self._release()

    def _release(self) -> None:
        held = self._held
        if held.slot is not None:
            table, index = held.slot
            held.slot = None
            table.release(index)
        if held.lease is not None:
            domain, token = held.lease
            held.lease = None
            self.leases.release(domain, token)

    def _defer(self, task: AnyTask, domain: str, scope: str, cap: int) -> None:
        countdown = self.defer_s * (1 + random.random() / 2)  # jitter, not cryptography
        self.deferred += 1
        now = time.monotonic()
        if now - self._last_log.get(domain, -float("inf")) >= 5.0:  # one line per domain every 5 s per process
            self._last_log[domain] = now
            log_event(logging.INFO, "bulkhead-deferred", logger, domain=domain, scope=scope, cap=cap,
                      task=task.name, task_id=task.request.id, countdown_s=round(countdown, 3),
                      deferred_total=self.deferred)
        requeue(task, countdown_s=countdown, retries=int(task.request.retries or 0))
