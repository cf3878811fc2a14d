"""Which message each prefork pool process is running, in memory the whole pool shares.

Celery blames a task for its pool process's death (``WorkerLostError``) only
when the worker already read the process's "accepted" message. A process that
dies right after starting a job, before the worker's event loop read that
message (a poison message that kills its process at once, under load), looks
to billiard like a job that never started: the job goes to another process,
and nothing records the death. A crash loop then runs once more than
``prismatic_quarantine_deliveries`` allows.

:class:`RunningSlots` closes that gap without a store round trip: a shared
anonymous memory map, created in the worker's main process before the pool
forks, with one 64-byte slot per pool process index. A pool process writes the
id of the message it starts into its slot and clears it when the task returns.
:func:`watch_pool` wraps the pool's handling of a job whose process died before
accepting it: when the dead process's slot names that job, the job did run and
its death is counted (:meth:`SupervisedRequest.died_unaccepted`).

The same memory says which domains each pool process has served (:meth:`RunningSlots.served`): a process marks a
domain the first time it runs one of its messages (a set check per task, no message to the worker's main process),
and a ``one_for_all`` restart recycles exactly those processes.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

from ..log import get_logger, log_event

__all__ = ["SLOT_BYTES", "RunningSlots", "watch_pool"]

logger = get_logger("engine")

SLOT_BYTES = 64  # one length byte, then up to 63 bytes of the message id
PID_BYTES = 4  # a served record: the process's pid, then one bit per domain
_SLOT = struct.Struct(f"B{SLOT_BYTES - 1}s")
DEFAULT_SLOTS = 256  # pool process indexes 0..255 are tracked (more is untracked, never wrong)
_WATCHED = "_prismatic_watched"
_forks = [0]  # forks this process descends from: a slot table finds its process's slot again after one


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


def _process_index() -> int | None:
    """This process's index in the prefork pool (None outside a pool process)."""
    try:
        from billiard.process import current_process
    except ImportError:  # billiard ships with Celery
        return None
    index = getattr(current_process(), "index", None)
    return index if isinstance(index, int) else None


def _encode(task_id: str) -> bytes:
    return task_id.encode("utf-8", "replace")[: SLOT_BYTES - 1]


class RunningSlots:
    """One slot per pool process index: the id of the message that process is running, its pid and the domains it
    has served (one bit each, in the order of ``domains``)."""

    def __init__(self, count: int = DEFAULT_SLOTS, *, index: Callable[[], int | None] = _process_index,
                 domains: Sequence[str] = ()) -> None:
        self.count = count
        self.domains = tuple(domains)
        self._bits = {name: bit for bit, name in enumerate(self.domains)}
        self._served_bytes = PID_BYTES + (len(self.domains) + 7) // 8
        # anonymous and shared: survives fork, one for the pool; the running ids first, then what each served
        self._map = mmap.mmap(-1, count * (SLOT_BYTES + self._served_bytes))
        self._index = index
        self._forks = -1
        self._offset: int | None = None
        self._served: set[str] = set()
        """The domains this process has marked (a fork starts afresh)."""

    def _own_offset(self) -> int | None:
        if self._forks != _forks[0]:  # looked up once per process (no getpid system call per task)
            self._forks = _forks[0]
            index = self._index()
            self._offset = index * SLOT_BYTES if index is not None and 0 <= index < self.count else None
            self._served = set()
            if index is not None and self._offset is not None:  # a new process in this slot: nothing served yet
                at = self._served_at(index)
                self._map[at:at + self._served_bytes] = os.getpid().to_bytes(PID_BYTES, "little") + bytes(
                    self._served_bytes - PID_BYTES)
        return self._offset

    def _served_at(self, index: int) -> int:
        return self.count * SLOT_BYTES + index * self._served_bytes

    def enter(self, task_id: str, domain: str | None = None) -> None:
        """This process starts running ``task_id`` of ``domain`` (no-op outside a tracked pool process)."""
        offset = self._offset if self._forks == _forks[0] else self._own_offset()
        if offset is not None:
            data = _encode(task_id)
            _SLOT.pack_into(self._map, offset, len(data), data)
            if domain is not None and domain not in self._served:
                self._serve(offset // SLOT_BYTES, domain)

    def _serve(self, index: int, domain: str) -> None:
        """Mark ``domain`` served by the process in slot ``index`` (once per process and domain)."""
        self._served.add(domain)
        bit = self._bits.get(domain)
        if bit is not None:
            at = self._served_at(index) + PID_BYTES + bit // 8
            self._map[at] |= 1 << (bit % 8)

    def leave(self) -> None:
        """This process runs no message any more."""
        offset = self._offset if self._forks == _forks[0] else self._own_offset()
        if offset is not None:
            self._map[offset] = 0

    def served(self) -> dict[str, set[int]]:
        """The pids of the pool processes that have served each domain (a process that died since may be among
        them: its replacement takes its slot at its first task)."""
        found: dict[str, set[int]] = {name: set() for name in self.domains}
        if not self.domains:
            return found
        start = self._served_at(0)
        records = struct.iter_unpack(f"<I{self._served_bytes - PID_BYTES}s", self._map[start:])
        for pid, bits in records:
            if pid and any(bits):
                mask = int.from_bytes(bits, "little")
                for bit, name in enumerate(self.domains):
                    if mask >> bit & 1:
                        found[name].add(pid)
        return found

    def running(self, index: int) -> str | None:
        """The message the process with ``index`` was running (None: none, or untracked)."""
        if not 0 <= index < self.count:
            return None
        offset = index * SLOT_BYTES
        size = self._map[offset]
        if not size:
            return None
        return self._map[offset + 1:offset + 1 + size].decode("utf-8", "replace")

    def clear(self, index: int) -> None:
        """Forget what the process with ``index`` was running (it is gone)."""
        if 0 <= index < self.count:
            self._map[index * SLOT_BYTES] = 0

    def ran(self, index: int, task_id: str) -> bool:
        """True when the slot of ``index`` names ``task_id``."""
        return self.running(index) == _encode(task_id).decode("utf-8", "replace")


class PoolJob(Protocol):
    """What is read of one of billiard's jobs (``ApplyResult``)."""

    _accepted: bool

    def discard(self) -> None: ...


def watch_pool(pool: object, slots: RunningSlots) -> bool:
    """Count the deaths of pool processes that ran a job the worker never saw accepted.

    ``pool`` is the worker's Celery pool (``consumer.pool``); only prefork pools
    have such jobs (returns False for the others, or when already watched).
    The job's request decides (``died_unaccepted(exitcode)``): when it returns
    True the message was taken out (quarantined) and is not sent to another process.
    """
    asyn = getattr(pool, "_pool", None)
    original = getattr(asyn, "on_partial_read", None)
    if asyn is None or original is None or getattr(asyn, _WATCHED, False):
        return False

    def on_partial_read(job: PoolJob, proc: object) -> object:
        taken = False
        try:
            taken = _count_unaccepted_death(job, proc, slots)
            if taken:
                job._accepted = True  # billiard puts back only jobs nobody accepted
        except Exception as exc:  # bookkeeping only: billiard's own handling goes on
            log_event(logging.ERROR, "request-hook-failed", logger, hook="on_partial_read", error=repr(exc)[:300])
        result = original(job, proc)
        if taken:
            job.discard()  # the request already reported its outcome
        return result

    asyn.on_partial_read = on_partial_read
    setattr(asyn, _WATCHED, True)
    return True


def _count_unaccepted_death(job: PoolJob, proc: object, slots: RunningSlots) -> bool:
    """Count the death if ``proc`` was running ``job`` when it died; True when the message was taken out."""
    index = getattr(proc, "index", None)
    if getattr(job, "_accepted", True) or not isinstance(index, int):
        return False
    ran = slots.ran(index, str(getattr(job, "correlation_id", "")))
    slots.clear(index)
    if not ran:
        return False  # the job was only written to the process: billiard sends it to another one
    request = getattr(getattr(job, "_accept_callback", None), "__self__", None)
    died_unaccepted = getattr(request, "died_unaccepted", None)
    return bool(died_unaccepted(getattr(proc, "exitcode", None))) if callable(died_unaccepted) else False
