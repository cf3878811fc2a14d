"""16 forked processes share one breaker in front of a dependency on 127.0.0.1 that is down for 1.5 s.

Given a shared breaker (fail_max 5, reset timeout 0.4 s) in 16 processes calling a local TCP server
in a loop (a call to the dead server takes 20 ms), when the server answers errors for 1.5 s and
then recovers, then, measured at the server and on the events channel:
- the circuit opens once fail_max failures are counted, and at exactly fail_max;
- after it opened, calls reach the server one at a time: the half-open trial, never two at once;
- with ``strict``, at most fail_max calls start before it opens, so the server sees at most
  fail_max plus one trial per reset timeout; without it, calls already in flight (or admitted from a
  cache the opening had not reached yet) may also arrive, each process at most one;
- it closes again once the server is up.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from prismatic_celery.circuits import Circuits
from prismatic_celery.store import RedisStore
from prismatic_celery.store.keys import Keys
from tests import circuits_fixtures as fx

redis_namespace = fx.redis_namespace
PROCESSES = 16
FAIL_MAX = 5
RESET_S = 0.4
DOWN_S = 1.5
RUN_S = 2.3
HOLD_S = 0.02


@pytest.fixture
def server() -> Iterator[fx.FlakyServer]:
    flaky = fx.FlakyServer(hold_s=HOLD_S)
    yield flaky
    flaky.close()


class Transitions:
    """Every state change published on the events channel, as the parent receives them."""

    def __init__(self, url: str, channel: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.05)
            if message and message.get("type") == "message":
                self.messages.append(json.loads(message["data"]))

    def close(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        return [m for m in self.messages if m["state"] != m["old_state"]]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
def test_sixteen_processes_open_at_fail_max_and_run_one_trial_at_a_time(
    redis_namespace: tuple[str, str], server: fx.FlakyServer, strict: bool
) -> None:
    """The server and the events channel show one opening at fail_max and trials that never overlap."""
    url, namespace = redis_namespace
    ctx = multiprocessing.get_context("fork")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    spec = {"fail_max": FAIL_MAX, "reset_timeout_s": RESET_S, "call_timeout_s": 2.0, "strict": strict}
    workers = [
        ctx.Process(target=fx.hammer, args=(url, namespace, server.port, spec, ready, go, RUN_S, results))
        for _ in range(PROCESSES)
    ]
    transitions = Transitions(url, Keys(namespace).key("circuit-events"))
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        server.go_down_for(DOWN_S)
        go.set()
        counts = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    changes = transitions.close()
    down = sorted(server.down_hits, key=lambda hit: hit.start)
    openings = [m for m in changes if m["state"] == "open"]
    assert openings and openings[0]["old_state"] == "closed", changes
    first = openings[0]
    opened_at, open_until = int(first["opened_at_ms"]) / 1000, int(first["open_until_ms"]) / 1000
    before = [hit for hit in down if hit.start < opened_at]
    stragglers = [hit for hit in down if opened_at <= hit.start < open_until]
    trials = [hit for hit in down if hit.start >= open_until]
    print(f"strict={strict}: {len(down)} calls reached the dead server: {len(before)} before it opened, "
          f"{len(stragglers)} after it opened (before its reset timeout), {len(trials)} trials; "
          f"{sum(c['refused'] for c in counts)} refused, {sum(c['ok'] for c in counts)} ok")

    # it opens at exactly fail_max; each failed trial counts one more, as pybreaker counts it
    assert int(first["fail_counter"]) == FAIL_MAX, first
    assert [int(m["fail_counter"]) for m in openings] == list(range(FAIL_MAX, FAIL_MAX + len(openings))), openings
    # after it opened, one trial at a time: no two calls to the dead server overlap
    assert 1 <= len(trials) <= math.ceil(DOWN_S / RESET_S) + 1, trials
    assert all(a.end <= b.start for a, b in itertools.pairwise(trials)), trials
    assert len(openings) == len(trials) + 1, (openings, trials)  # each trial at the dead server reopened it
    if strict:
        assert len(before) <= FAIL_MAX and not stragglers, (before, stragglers)
        assert len(down) <= FAIL_MAX + math.ceil(DOWN_S / RESET_S) + 1, down
    else:
        assert len(before) <= FAIL_MAX + PROCESSES - 1 and len(before) + len(stragglers) <= FAIL_MAX + PROCESSES
    # every call that reached the server was counted by its process; it closes once the server is up
    assert sum(c["failed"] for c in counts) == len(down)
    assert server.up_hits and sum(c["ok"] for c in counts) == len(server.up_hits)
    assert changes[-1]["state"] == "closed" and changes[-1]["reason"] == "trial-succeeded", changes[-3:]
    circuits = Circuits(RedisStore(url, timeout_s=fx.HEALTHY_TIMEOUT_S), Keys(namespace), listen=False)
    assert circuits.declare("dep").record().state == "closed"
