"""Four worker processes share one breaker in front of a dependency on 127.0.0.1 that is down for 1 s.

Given a shared breaker (fail_max 5, reset timeout 0.2 s) in 4 processes calling a local TCP server,
when the server answers errors for 1 s and then recovers,
then the server sees at most fail_max failed calls plus one trial per reset timeout, and the
circuit closes again once it is up. Without ``strict``, calls already in flight when it trips
(at most one per other process) may also reach it.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator

import pytest

from prismatic_celery.circuits import Circuits
from prismatic_celery.keys import Keys
from prismatic_celery.store import RedisStore
from tests import circuits_fixtures as fx

redis_namespace = fx.redis_namespace
PROCESSES = 4
FAIL_MAX = 5
RESET_S = 0.2
DOWN_S = 1.0
RUN_S = 1.6


@pytest.fixture
def server() -> Iterator[fx.FlakyServer]:
    flaky = fx.FlakyServer()
    yield flaky
    flaky.close()


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
def test_calls_reaching_a_dead_dependency_are_bounded(
    redis_namespace: tuple[str, str], server: fx.FlakyServer, strict: bool
) -> None:
    """The server counts at most fail_max (+ in-flight callers unless strict) + one trial per reset timeout."""
    url, namespace = redis_namespace
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    spec = {"fail_max": FAIL_MAX, "reset_timeout_s": RESET_S, "call_timeout_s": 2.0, "strict": strict}
    workers = [
        ctx.Process(target=fx.hammer, args=(url, namespace, server.port, spec, ready, go, RUN_S, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        server.go_down_for(DOWN_S)
        go.set()
        counts = [results.get(timeout=30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()

    trials = math.floor(DOWN_S / RESET_S) + 1
    in_flight = 0 if strict else PROCESSES - 1
    assert FAIL_MAX <= server.down_hits <= FAIL_MAX + in_flight + trials, (server.down_hits, counts)
    assert server.up_hits > 0 and sum(c["ok"] for c in counts) == server.up_hits
    assert sum(c["refused"] for c in counts) > 0
    circuits = Circuits(RedisStore(url), Keys(namespace), listen=False)
    circuits.declare("dep")
    assert circuits.get("dep").record().state == "closed"
