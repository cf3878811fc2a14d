"""Running slots: which message a pool process runs, seen by the worker after the process died.

The race they close (a process dies before the worker read its "accepted" message, and billiard
sends the job to another process without a WorkerLostError) cannot be forced in a real worker, so
the pool side is exercised here with billiard's own decision (``on_partial_read`` puts back an
unaccepted job) and a real fork for the shared memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from prismatic_celery.supervision.slots import SLOT_BYTES, RunningSlots, watch_pool


def test_a_slot_written_in_a_forked_process_is_read_by_its_parent() -> None:
    slots = RunningSlots(8, index=lambda: 3)
    pid = os.fork()
    if pid == 0:  # the pool process: starts a message and dies without clearing its slot
        slots.enter("task-1234")
        os._exit(1)
    os.waitpid(pid, 0)
    assert slots.running(3) == "task-1234"
    assert slots.ran(3, "task-1234") and not slots.ran(3, "task-9")
    slots.clear(3)
    assert slots.running(3) is None


def test_leave_clears_and_untracked_processes_write_nothing() -> None:
    slots = RunningSlots(4, index=lambda: 1)
    slots.enter("a")
    assert slots.running(1) == "a"
    slots.leave()
    assert slots.running(1) is None
    for index in (None, 4, -1):
        untracked = RunningSlots(4, index=lambda index=index: index)  # type: ignore[misc]
        untracked.enter("b")
        assert [untracked.running(i) for i in range(4)] == [None] * 4
    assert slots.running(99) is None


def test_a_long_id_is_compared_on_what_fits() -> None:
    slots = RunningSlots(2, index=lambda: 0)
    long_id = "x" * 200
    slots.enter(long_id)
    assert slots.ran(0, long_id)
    assert len(slots.running(0) or "") == SLOT_BYTES - 1


def test_each_process_marks_the_domains_it_served_and_its_successor_starts_afresh() -> None:
    """A pool process marks a domain at its first message of it; the worker reads which pids served each domain.
    A process forked later into the same slot (a replacement) erases its predecessor's record at its first task."""
    slots = RunningSlots(4, index=lambda: 2, domains=["core", "osint", "evo"])
    assert slots.served() == {"core": set(), "osint": set(), "evo": set()}

    def child(domains: list[str | None]) -> int:
        pid = os.fork()
        if pid == 0:
            for domain in domains:
                slots.enter(f"task-{domain}", domain)
                slots.leave()
            os._exit(0)
        os.waitpid(pid, 0)
        return pid

    first = child(["core", "evo", "core", None, "unknown"])
    assert slots.served() == {"core": {first}, "osint": set(), "evo": {first}}
    second = child(["osint"])
    assert slots.served() == {"core": set(), "osint": {second}, "evo": set()}
    assert slots.running(2) is None


def test_a_process_outside_the_pool_marks_nothing() -> None:
    slots = RunningSlots(4, index=lambda: None, domains=["core"])
    slots.enter("task-1", "core")
    assert slots.served() == {"core": set()}


def test_the_reconciler_reads_who_served_its_domains_from_the_slots() -> None:
    """A prefork worker's reconciler answers from its pool's slots; without them (solo, threads) the tasks run in
    the worker's own process, which serves every domain it consumes."""
    from prismatic_celery.store import MemoryStore
    from prismatic_celery.store.keys import Keys
    from prismatic_celery.supervision.reconcile import Reconciler
    from prismatic_celery.supervision.tree import Supervisor

    supervisor = Supervisor.from_config("prismatic_domains", {"core": {"children": ["storage"]},
                                                              "evo": {"children": ["mendel"]},
                                                              "osint": {"children": ["sources"]}})
    reconciler = Reconciler(MemoryStore(), Keys("t"), supervisor, ["storage", "mendel"])
    assert reconciler.served_pids == {"core": {os.getpid()}, "evo": {os.getpid()}}
    slots = RunningSlots(4, index=lambda: 1, domains=["core", "evo", "osint"])
    reconciler.slots = slots
    pid = os.fork()
    if pid == 0:
        slots.enter("task-1", "evo")
        os._exit(0)
    os.waitpid(pid, 0)
    assert reconciler.served_pids == {"core": set(), "evo": {pid}}


# -- the pool side ---------------------------------------------------------------------------
@dataclass
class Request:
    quarantine: bool
    calls: list[Any] = field(default_factory=list)

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        """What billiard keeps as the job's accept callback."""

    def died_unaccepted(self, exitcode: Any) -> bool:
        self.calls.append(exitcode)
        return self.quarantine


class Job:
    def __init__(self, task_id: str, request: Request, accepted: bool = False) -> None:
        self.correlation_id = task_id
        self._accept_callback = request.on_accepted
        self._accepted = accepted
        self.discarded = False

    def discard(self) -> None:
        self.discarded = True


@dataclass
class Proc:
    index: int
    exitcode: int = 1


class AsynPool:
    """billiard's rule: a job whose process died before accepting it is put back."""

    def __init__(self) -> None:
        self.put_back: list[Job] = []
        self.cleaned: list[Proc] = []

    def on_partial_read(self, job: Job, proc: Proc) -> None:
        if not job._accepted:
            self.put_back.append(job)
        self.cleaned.append(proc)


class Pool:
    def __init__(self) -> None:
        self._pool = AsynPool()


def _watched(slots: RunningSlots) -> Pool:
    pool = Pool()
    assert watch_pool(pool, slots)
    assert not watch_pool(pool, slots), "watched once"
    return pool


@pytest.mark.parametrize("quarantine", [False, True])
def test_a_job_its_dead_process_was_running_counts_a_death(quarantine: bool) -> None:
    slots = RunningSlots(4, index=lambda: 2)
    slots.enter("t-1")
    pool = _watched(slots)
    request = Request(quarantine)
    job = Job("t-1", request)
    pool._pool.on_partial_read(job, Proc(2, exitcode=1))
    assert request.calls == [1], "the death is counted once"
    assert pool._pool.cleaned == [Proc(2, exitcode=1)], "billiard still cleans up the process"
    if quarantine:
        assert pool._pool.put_back == [] and job.discarded, "quarantined: not sent to another process"
    else:
        assert pool._pool.put_back == [job] and not job.discarded, "below the limit: it runs again"
    assert slots.running(2) is None


def test_a_job_only_written_to_the_dead_process_is_put_back_without_a_death() -> None:
    slots = RunningSlots(4, index=lambda: 2)
    slots.enter("other")
    pool = _watched(slots)
    request = Request(True)
    job = Job("t-1", request)
    pool._pool.on_partial_read(job, Proc(2))
    assert request.calls == [] and pool._pool.put_back == [job]


def test_an_accepted_job_is_left_to_celerys_worker_lost_handling() -> None:
    slots = RunningSlots(4, index=lambda: 0)
    slots.enter("t-1")
    pool = _watched(slots)
    request = Request(True)
    pool._pool.on_partial_read(Job("t-1", request, accepted=True), Proc(0))
    assert request.calls == [] and pool._pool.put_back == []


def test_a_failing_hook_leaves_billiards_handling_intact() -> None:
    slots = RunningSlots(4, index=lambda: 0)
    slots.enter("t-1")
    pool = _watched(slots)

    class Broken(Request):
        def died_unaccepted(self, exitcode: Any) -> bool:
            raise RuntimeError("store exploded")

    job = Job("t-1", Broken(True))
    pool._pool.on_partial_read(job, Proc(0))
    assert pool._pool.put_back == [job] and not job.discarded


def test_pools_without_processes_are_not_watched() -> None:
    assert not watch_pool(object(), RunningSlots(1))
