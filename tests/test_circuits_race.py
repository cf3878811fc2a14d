"""pybreaker's CircuitRedisStorage races between processes; the shared breaker does not.

Each "process" is a thread with its own breaker object and its own Redis connection, so
nothing in-process (pybreaker's per-instance lock, our cache) serialises them: only what
Redis guarantees does. Every scenario releases 8 callers at once through a barrier.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import fakeredis
import pybreaker
import pytest
import redis

from prismatic_celery.circuits import Circuits, CircuitSpec
from prismatic_celery.observability.events import Dispatcher
from prismatic_celery.store import RedisStore
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import wait_for
from tests import circuits_fixtures as fx

redis_namespace = fx.redis_namespace
CALLERS = 8
REPETITIONS = 100


class Down(ConnectionError):
    """The dependency is down."""


def release_together(calls: list[Callable[[], Any]]) -> None:
    """Run each call in its own thread, all released at the same instant."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> None:
        barrier.wait()
        with contextlib.suppress(Exception):  # the outcome is read from the counters, not from exceptions
            call()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


class Dependency:
    """A dead dependency that counts the calls reaching it (each takes 10 ms, then fails)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
        time.sleep(0.01)
        raise Down("refused")


def all_see_open(registries: list[Circuits], name: str) -> bool:
    """Every process's view of ``name`` is open (its listener delivered the opening, or it read the store)."""
    return all(registry.state(name) == "open" for registry in registries)


@pytest.fixture
def processes(redis_namespace: tuple[str, str]) -> Iterator[tuple[list[Circuits], fx.Recorder]]:
    """8 registries, each with its own Redis connection, one shared event recorder."""
    url, namespace = redis_namespace
    recorder = fx.Recorder()
    registries = [Circuits(RedisStore(url, timeout_s=fx.HEALTHY_TIMEOUT_S), Keys(namespace), Dispatcher([recorder]))
                  for _ in range(CALLERS)]
    yield registries, recorder
    for registry in registries:
        registry.stop()
        registry.store.close()


class Opened(pybreaker.CircuitBreakerListener):
    """Records each time a pybreaker instance moves to OPEN."""

    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def state_change(self, cb: Any, old: Any, new: Any) -> None:
        if new.name == pybreaker.STATE_OPEN:
            self.sink.append(str(cb.name))


def pybreakers(
    url: str, namespace: str, state: str, **kwargs: Any
) -> tuple[list[pybreaker.CircuitBreaker], redis.Redis]:
    clients = [redis.Redis.from_url(url) for _ in range(CALLERS)]
    breakers = [
        pybreaker.CircuitBreaker(state_storage=pybreaker.CircuitRedisStorage(state, c, namespace=namespace), **kwargs)
        for c in clients
    ]
    return breakers, clients[0]


def test_pybreaker_lets_every_process_run_a_half_open_trial(redis_namespace: tuple[str, str]) -> None:
    """pybreaker: all 8 processes see the timeout pass, each half-opens and each calls the dead dependency."""
    url, namespace = redis_namespace
    trials = []
    for rep in range(5):
        ns = f"prismatic:{namespace}:pybreaker{rep}"
        breakers, client = pybreakers(url, ns, pybreaker.STATE_OPEN, fail_max=1, reset_timeout=0.001)
        client.set(f"{ns}:pybreaker:opened_at", int(time.time()) - 10)
        dependency = Dependency()
        release_together([partial(b.call, dependency) for b in breakers])
        trials.append(dependency.calls)
    assert max(trials) > 1, trials


def test_ours_admits_exactly_one_trial_cluster_wide(processes: tuple[list[Circuits], fx.Recorder]) -> None:
    """Ours, 100 of 100 times: one trial reaches the dependency, 7 callers are refused, one reopening."""
    registries, recorder = processes
    spec = CircuitSpec(fail_max=1, reset_timeout_s=10, call_timeout_s=5)
    for rep in range(REPETITIONS):
        name = f"trial{rep}"
        for registry in registries:
            registry.declare(name, spec)
        registries[0].open_for(name, 1)
        # Each process learns of the opening from its listener (pub/sub); until then its cached "closed" (read
        # when declared, fresh for cache_ttl_s) lets calls through: the bounded staleness of circuits/hub.py.
        # What this test asserts is the trial's admission once every process knows, so it waits for that.
        wait_for(partial(all_see_open, registries, name), timeout_s=30, interval_s=0.001,
                 message=f"repetition {rep}: every process sees the opening")
        recorder.events.clear()
        dependency = Dependency()
        release_together([partial(r.get(name).call, dependency) for r in registries])
        assert dependency.calls == 1, f"repetition {rep}: {dependency.calls} trials"
        assert recorder.transitions() == [("open", "half-open"), ("half-open", "open")], f"repetition {rep}"
        assert registries[0].get(name).record().permits == 0


def test_pybreaker_counts_past_fail_max_and_trips_once_per_process(redis_namespace: tuple[str, str]) -> None:
    """pybreaker: at 4 of 5 failures, 8 concurrent failures all reach the dependency; each process trips it."""
    url, namespace = redis_namespace
    outcomes = []
    for rep in range(5):
        ns = f"prismatic:{namespace}:pybreaker{rep}"
        opened: list[str] = []
        breakers, client = pybreakers(url, ns, pybreaker.STATE_CLOSED, fail_max=5, reset_timeout=60,
                                      listeners=[Opened(opened)])
        client.set(f"{ns}:pybreaker:fail_counter", 4)
        dependency = Dependency()
        release_together([partial(b.call, dependency) for b in breakers])
        outcomes.append((dependency.calls, len(opened), int(client.get(f"{ns}:pybreaker:fail_counter") or 0)))
    assert any(calls > 1 and opens > 1 and counter > 5 for calls, opens, counter in outcomes), outcomes


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
def test_ours_counts_to_fail_max_and_trips_once(processes: tuple[list[Circuits], fx.Recorder], strict: bool) -> None:
    """Ours, 100 of 100 times: the counter stops at fail_max and it trips once; strict lets only one call through.

    (Without strict, callers already admitted while it was closed still reach the dependency.)
    """
    registries, recorder = processes
    spec = CircuitSpec(fail_max=5, reset_timeout_s=60, call_timeout_s=5, strict=strict)
    for rep in range(REPETITIONS):
        name = f"count{rep}"
        for registry in registries:
            registry.declare(name, spec)
        storage = registries[0].get(name).storage
        for _ in range(4):
            storage.apply("failure")
        recorder.events.clear()
        dependency = Dependency()
        release_together([partial(r.get(name).call, dependency) for r in registries])
        record = registries[0].get(name).record()
        assert (record.state, record.fail_counter) == ("open", 5), f"repetition {rep}: {record}"
        assert recorder.transitions() == [("closed", "open")], f"repetition {rep}"
        if strict:
            assert dependency.calls == 1, f"repetition {rep}: {dependency.calls} calls"


def test_pybreaker_without_namespace_shares_one_state_between_breakers() -> None:
    """pybreaker's default keys are global: tripping "payments" opens "search"; ours are per breaker and app."""
    server = fakeredis.FakeServer()
    theirs = {
        name: pybreaker.CircuitBreaker(fail_max=1, name=name, state_storage=pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, fakeredis.FakeRedis(server=server)))
        for name in ("payments", "search")
    }
    with pytest.raises(pybreaker.CircuitBreakerError):
        theirs["payments"].call(Dependency())
    assert theirs["search"].current_state == "open"

    pytest.importorskip("lupa", reason="fakeredis runs Lua only with lupa installed")
    store = RedisStore("redis://fake", client=fakeredis.FakeRedis(server=server, decode_responses=True))
    ours = Circuits(store, Keys(f"t{uuid.uuid4().hex[:6]}"), specs={"payments": CircuitSpec(fail_max=1),
                                                                 "search": CircuitSpec(fail_max=1)})
    with pytest.raises(pybreaker.CircuitBreakerError):
        ours.get("payments").call(Dependency())
    assert ours.state("search") == "closed"
    ours.stop()
