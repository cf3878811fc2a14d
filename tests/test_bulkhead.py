"""Bulkheads in-process: the shared slot table, the guard's deferrals and the cluster-wide leases."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Retry

from prismatic_celery import ConfigurationError, Domain, Supervisor, install
from prismatic_celery.admission.bulkhead import BulkheadGuard, ClusterLeases, SlotTable, lease_key
from prismatic_celery.admission.shedding import ShedGuard
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store import Store
from prismatic_celery.store.keys import Keys
from prismatic_celery.store.memory import MemoryStore
from prismatic_celery.supervision.requeue import requeue
from prismatic_celery.worker.pipeline import Stage
from prismatic_celery.worker.services import shed_guard
from prismatic_celery.worker.stages import BulkheadStage, CircuitStage, CrashStage, PauseStage
from prismatic_celery.worker.task import task_pipeline


def test_a_slot_table_never_hands_out_more_than_its_capacity_to_threads() -> None:
    """Eight threads competing for three slots: at most three hold one at any time."""
    table = SlotTable(3)
    holding, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            index = table.acquire()
            assert index is not None
            if index < 0:
                continue
            with lock:
                holding[0] += 1
                peak[0] = max(peak[0], holding[0])
            with lock:
                holding[0] -= 1
            table.release(index)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak[0] <= 3 and table.holders() == []


def test_the_same_thread_gets_its_own_slot_back_and_release_needs_the_holder() -> None:
    """A thread that never released (a later guard deferred its task) does not leak a second slot."""
    table = SlotTable(2)
    first = table.acquire()
    assert table.acquire() == first and table.holders() == [threading.get_native_id()]
    table.release(first if first is not None else -1, token=12345)
    assert len(table.holders()) == 1, "only the holder releases"
    table.release(first if first is not None else -1)
    assert table.holders() == []


def test_slots_are_shared_with_forked_children_and_a_dead_holders_slot_is_reclaimed() -> None:
    """A prefork child holds a slot the parent sees; once killed, its slot is taken back."""
    table = SlotTable(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the only slot, report, then die without releasing
        os.close(read)
        index = table.acquire()
        os.write(write, b"1" if index == 0 else b"0")
        time.sleep(30)
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
        assert table.holders() == [pid]
        assert table.acquire() == -1, "the child holds it"
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
    assert table.acquire() == 0, "the dead child's slot is reclaimed"


DOMAINS = {"slow": {"children": ["slow"], "concurrency": 1}, "fast": {"children": ["fast"]}}


def _app(**conf: Any) -> tuple[Celery, Runtime]:
    app = Celery("bhunit", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=conf.pop("domains", DOMAINS), prismatic_send_events=False,
                    prismatic_bulkhead_defer_s=0.5, **conf)
    install(app, store=MemoryStore())

    @app.task(name="bhunit.work", shared=False)
    def work() -> str:
        return "ran"

    runtime = get_runtime(app)
    assert runtime is not None
    return app, runtime


def _bulkhead(runtime: Runtime) -> BulkheadGuard:
    assert runtime.bulkhead is not None
    return runtime.bulkhead


def _push(task: Any, queue: str, task_id: str = "t1", retries: int = 0) -> None:
    task.push_request(id=task_id, args=[], kwargs={}, delivery_info={"exchange": "", "routing_key": queue},
                      called_directly=False, is_eager=False, hostname="w1@test", retries=retries)


def test_the_guard_defers_a_task_over_the_cap_with_its_retries_unchanged() -> None:
    """slow is capped at 1: while one task holds the slot, the next is republished (retries kept) and Retry raised."""
    app, runtime = _app()
    guard = _bulkhead(runtime)
    work = app.tasks["bhunit.work"]
    _push(work, "slow", "first")
    guard.before_run(work)
    work.pop_request()
    assert len(guard.tables["slow"].holders()) == 1

    sent: list[dict[str, Any]] = []
    result: list[BaseException] = []

    def other_thread() -> None:
        _push(work, "slow", "second", retries=3)
        try:
            guard.before_run(work)
        except Retry as exc:
            result.append(exc)
        finally:
            work.pop_request()
        _push(work, "fast", "third")
        guard.before_run(work)  # an uncapped domain is never deferred
        guard.after_run(work, False)
        work.pop_request()

    original = app.send_task
    app.send_task = lambda name, *a, **kw: sent.append({"name": name, **kw})  # type: ignore[method-assign,assignment,misc,return-value]
    try:
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    finally:
        app.send_task = original  # type: ignore[method-assign]
    assert len(result) == 1 and guard.deferred == 1
    [message] = sent
    assert message["task_id"] == "second" and message["retries"] == 3 and 0.5 <= message["countdown"] <= 0.75

    guard.after_run(work, False)
    assert guard.tables["slow"].holders() == []


class Full(Stage):
    """A later stage with no room: every message goes back to its queue before its body runs."""

    def before_run(self, task: Any, request: Any) -> None:
        requeue(task, countdown_s=1.0, retries=0)


def test_a_slot_is_given_back_when_a_later_stage_defers_the_task() -> None:
    """The pipeline pairs the hooks: a later stage defers after the slot was taken, and the slot is free again."""
    app, runtime = _app()
    guard = _bulkhead(runtime)
    pipeline = task_pipeline(runtime, guards=(Full(),))
    work = app.tasks["bhunit.work"]
    app.send_task = lambda *a, **kw: None  # type: ignore[method-assign,assignment,misc,return-value]
    for task_id in ("a", "b", "c"):
        _push(work, "slow", task_id)
        try:
            with pytest.raises(Retry):
                pipeline.run(work, lambda: None)
        finally:
            work.pop_request()
        assert guard.tables["slow"].holders() == []


def test_the_runtime_builds_the_admission_guards_and_the_pipeline_orders_the_stages() -> None:
    """Shedding in the worker's main process (a parked message never takes a slot), the caps around the
    task; none when nothing is capped or shed."""
    _, runtime = _app()
    assert isinstance(runtime.bulkhead, BulkheadGuard)
    assert isinstance(shed_guard(runtime), ShedGuard)
    assert [type(s) for s in task_pipeline(runtime).stages] == [CrashStage, PauseStage, BulkheadStage, CircuitStage]
    _, plain = _app(domains={"a": {"children": ["a"]}}, prismatic_shed_enabled=False)
    assert plain.bulkhead is None and shed_guard(plain) is None
    assert [type(s) for s in task_pipeline(plain).stages] == [CrashStage, PauseStage, CircuitStage]


def test_cluster_concurrency_is_part_of_the_tree() -> None:
    """cluster_concurrency is read from the config and described; a bad value names the setting."""
    _, runtime = _app(domains={"a": {"children": ["a"], "cluster_concurrency": 3}})
    assert runtime.supervisor.domain("a").cluster_concurrency == 3
    assert runtime.supervisor.describe()["domains"][0]["cluster_concurrency"] == 3
    assert Supervisor(domains=[Domain("b", children=["b"], cluster_concurrency=2)]).domain("b").cluster_concurrency == 2
    with pytest.raises(ConfigurationError, match=r"prismatic_domains\.a\.cluster_concurrency"):
        _app(domains={"a": {"children": ["a"], "cluster_concurrency": 0}})


# -- cluster-wide leases (contract: memory, fakeredis, redis) -------------------------------------
def test_leases_cap_the_domain_across_holders_and_expire_unless_renewed(store: Store) -> None:
    """At most cap leases; a released or expired lease frees its slot; renewal keeps one alive."""
    leases = ClusterLeases(store, Keys("lease"), lease_s=0.3, auto_renew=False)
    assert leases.acquire("d", 2, "w1|1") and leases.acquire("d", 2, "w2|1")
    assert not leases.acquire("d", 2, "w3|1"), "cap reached"
    assert leases.acquire("d", 2, "w1|1"), "a holder may take its own lease again"
    leases.release("d", "w2|1")
    assert leases.acquire("d", 2, "w3|1")
    time.sleep(0.2)
    assert leases.renew() == 2, "w1 and w3 renewed"
    time.sleep(0.2)
    assert not leases.acquire("d", 2, "w4|1"), "renewed leases are still held"
    time.sleep(0.35)  # nobody renews: a worker that died
    assert leases.acquire("d", 2, "w4|1"), "expired leases free their slots"
    assert leases.renew() == 1 and "w1|1" not in leases._held, "a lost lease is forgotten"


def test_the_guard_defers_over_the_cluster_cap() -> None:
    """Another worker holds the only cluster lease: this worker defers the task."""
    app, runtime = _app(domains={"a": {"children": ["a"], "cluster_concurrency": 1}})
    guard = _bulkhead(runtime)
    assert guard.leases.acquire("a", 1, "other-worker|1|1|x")
    work = app.tasks["bhunit.work"]
    _push(work, "a", "mine")
    app.send_task = lambda *a, **kw: None  # type: ignore[method-assign,assignment,misc,return-value]
    try:
        with pytest.raises(Retry):
            guard.before_run(work)
    finally:
        work.pop_request()
    guard.leases.release("a", "other-worker|1|1|x")
    _push(work, "a", "mine")
    guard.before_run(work)
    assert len(runtime.store.raw(lease_key(runtime.keys, "a"))) == 1  # type: ignore[attr-defined]
    guard.after_run(work, False)
    work.pop_request()
    assert runtime.store.raw(lease_key(runtime.keys, "a")) == {}  # type: ignore[attr-defined]
