"""A 10-second store outage with the circuit open, 4 forked processes sharing the breaker.

Given 4 processes calling a dead dependency through one shared breaker (fail_max 3, reset timeout
3 s) on a private Redis, once the circuit is open and every process knows it, when that Redis is
stopped for 10 s and started again (empty: it keeps no data), then:
- no process calls the dependency before the circuit's reset timeout;
- after it, each process runs its own trial, at most one per reset timeout;
- once the store is back, the opening the processes still hold is written back to it and every
  process follows the shared record again: a reset made there reaches all of them, and their calls
  go through.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from prismatic_celery.circuits import Circuits, CircuitSpec
from prismatic_celery.store import RedisStore
from prismatic_celery.store.keys import Keys
from tests import circuits_fixtures as fx
from tests.conftest import RedisServer

PROCESSES = 4
FAIL_MAX, RESET_S = 3, 3.0
OUTAGE_S = 10.0
SPEC = {"fail_max": FAIL_MAX, "reset_timeout_s": RESET_S, "call_timeout_s": 2.0}
#: The store's first opening after the outage: the opening written back, or the reopening of the one trial it let in.
WRITTEN_BACK = ("store-outage", "trial-failed")


@pytest.fixture
def dependency() -> Iterator[fx.FlakyServer]:
    flaky = fx.FlakyServer()
    flaky.go_down_for(3600)
    yield flaky
    flaky.close()


def test_an_open_circuit_survives_a_store_outage_and_is_shared_again_after_it(
    redis_server: RedisServer, dependency: fx.FlakyServer
) -> None:
    """Nothing reaches the dead dependency before the reset timeout; then one trial per process per reset
    timeout; after the outage the processes follow the store again."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    ctx = multiprocessing.get_context("fork")
    ready, results, go, stop = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    views: Any = ctx.Array("d", 2 * PROCESSES, lock=False)
    workers = [
        ctx.Process(target=fx.hammer, args=(redis_server.url, namespace, dependency.port, SPEC, ready, go, 120.0,
                                            results, i, views, 0.01, stop))
        for i in range(PROCESSES)
    ]
    parent = Circuits(RedisStore(redis_server.url, timeout_s=fx.HEALTHY_TIMEOUT_S), Keys(namespace),
                      specs={"dep": CircuitSpec(**SPEC)}, listen=False)
    breaker = parent.get("dep")

    def everyone_sees(record: Any) -> bool:
        return all(views[2 * i] == fx.STATE_CODES.index(record.state) and views[2 * i + 1] == record.seq
                   for i in range(PROCESSES))

    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        go.set()
        opened = fx.wait_until(lambda: (r := breaker.record()).state == "open" and everyone_sees(r) and r,
                               timeout_s=20, message="every process to know the circuit is open")
        stopped_at = time.time()
        redis_server.stop()
        time.sleep(OUTAGE_S)  # the outage itself is the scenario
        redis_server.start()
        back_at = time.time()
        # The dependency is still down, so the circuit stays open (were it up, a trial could close the circuit before
        # every process followed the written-back opening, on a loaded machine). The opening a process still held is
        # written back; then every process follows the store's record (a later trial may have reopened it since).
        # An opening that lapsed during the outage goes back for 1 ms, so the next call anywhere is a trial: the
        # store may show the trial's reopening ("trial-failed", only ever from a half-open circuit, so only after
        # the write-back) before this poll sees the 1 ms record; without the write-back, the empty store's closed
        # circuit would take fail_max calls and open for the reset timeout with "failures".
        seen: list[tuple[str, str, int]] = []

        def opening_written_back() -> Any:
            record = breaker.record()
            if not seen or seen[-1] != (record.state, record.reason, record.seq):
                seen.append((record.state, record.reason, record.seq))
            return record.state == "open" and record.reason in WRITTEN_BACK and record

        try:
            written_back = fx.wait_until(opening_written_back, timeout_s=60, message="the opening held written back")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the store's records since it returned: {seen}") from None
        fx.wait_until(lambda: everyone_sees(breaker.record()), timeout_s=60,
                      message="every process to follow the store's record again")
        dependency.go_up()
        reset = parent.reset("dep")
        fx.wait_until(lambda: everyone_sees(reset) or everyone_sees(breaker.record()), timeout_s=60,
                      message="every process to see the reset")
        ok_before = len(dependency.up_hits)
        fx.wait_until(lambda: len(dependency.up_hits) >= ok_before + 4 * PROCESSES, timeout_s=60,
                      message="calls to go through again")
        stop.set()
        counts = [results.get(timeout=30) for _ in workers]
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        parent.stop()

    open_until = opened.open_until_ms / 1000
    during = [hit for hit in dependency.down_hits if stopped_at <= hit.start <= back_at]
    early = [hit for hit in during if hit.start < open_until - 0.05]
    per_process = [sum(1 for at in c["failed_at"] if stopped_at <= at <= back_at) for c in counts]
    bound = math.ceil((back_at - open_until) / RESET_S)  # the README's: one trial per process per reset timeout
    print(f"outage {back_at - stopped_at:.1f}s, open {open_until - stopped_at:.1f}s more when it began: "
          f"calls to the dead dependency per process during it {per_process} (bound {bound}); "
          f"after it the store's record was {written_back.state} ({written_back.reason})")
    assert stopped_at < open_until, "the circuit was open, with time left, when the store went down"
    assert not early, f"{len(early)} calls before the reset timeout: {early}"
    assert all(1 <= n <= bound for n in per_process), (per_process, bound)
    assert sum(per_process) == len(during)
    assert written_back.reason in WRITTEN_BACK, written_back
    assert not [r for r in seen if r[1] == "failures"], f"the closed store took fail_max calls: {seen}"
    assert all(c["ok"] > 0 for c in counts), counts
