"""Store outages: each process goes on from the last state it knew, then the shared record comes back.

Two "processes" (registries, each with its own connection) share one breaker on fakeredis, whose
server can be cut (``connected = False``); time is injected (the breakers' clocks, the store's
retry clock and the server's ``TIME``), so nothing here sleeps. The 10-second outage of a real Redis
with forked processes is ``tests/test_circuits_outage_processes.py``.
"""

from __future__ import annotations

import logging
import types
import uuid
from collections.abc import Iterator

import fakeredis
import pytest
from fakeredis.commands_mixins import server_mixin

from prismatic_celery.circuits import CircuitOpenError, Circuits, CircuitSpec
from prismatic_celery.observability.events import Dispatcher
from prismatic_celery.store import RedisStore
from prismatic_celery.store.keys import Keys
from tests import circuits_fixtures as fx

pytest.importorskip("lupa", reason="fakeredis runs Lua only with lupa installed")

FAIL_MAX, RESET_S = 3, 30.0


class Down(ConnectionError):
    """The dependency is down."""


class Dependency:
    """Counts the calls reaching it; fails while ``down``."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = True

    def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise Down("refused")
        return "ok"


class Cluster:
    """Processes sharing one fakeredis server, on one injected clock."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.clock = fx.FakeClock()
        self.namespace = f"t{uuid.uuid4().hex[:8]}"
        self.recorder = fx.Recorder()
        self.registries: list[Circuits] = []

    def process(self) -> Circuits:
        client = fakeredis.FakeRedis(server=self.server, decode_responses=True)
        store = RedisStore("redis://fake", client=client, clock=self.clock.monotonic, retry_s=1.0)
        spec = CircuitSpec(fail_max=FAIL_MAX, reset_timeout_s=RESET_S, call_timeout_s=5)
        registry = Circuits(store, Keys(self.namespace), Dispatcher([self.recorder]), specs={"dep": spec},
                            listen=False, cache_ttl_s=1.0, monotonic=self.clock.monotonic, clock=self.clock.time)
        self.registries.append(registry)
        return registry

    def store_down(self) -> None:
        self.server.connected = False

    def store_back(self, *, lost_data: bool = False) -> None:
        self.server.connected = True
        if lost_data:
            fakeredis.FakeRedis(server=self.server).flushall()
        self.clock.advance(1.1)  # past each store's retry delay


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    made = Cluster()
    # the store's clock (Redis TIME, which the scripts read) is the injected one too
    monkeypatch.setattr(server_mixin, "time", types.SimpleNamespace(time=made.clock.time))
    yield made


def outcome(circuits: Circuits, dependency: Dependency) -> str:
    """One guarded call: ``ok``, ``failed`` (reached the dependency) or ``refused`` (did not)."""
    before = dependency.calls
    try:
        circuits.get("dep").call(dependency)
    except CircuitOpenError:
        return "failed" if dependency.calls > before else "refused"
    except Down:
        return "failed"
    return "ok"


def trip(circuits: Circuits, dependency: Dependency) -> None:
    assert [outcome(circuits, dependency) for _ in range(FAIL_MAX)] == ["failed"] * FAIL_MAX
    assert circuits.get("dep").record().state == "open"


def test_an_open_circuit_stays_open_through_an_outage_then_each_process_runs_one_trial(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Store down with the circuit open: no call before the reset timeout, then one trial per process
    per reset timeout; the outage is logged once per breaker and process, not per call."""
    a, b = cluster.process(), cluster.process()
    dependency = Dependency()
    trip(a, dependency)
    calls, start = dependency.calls, cluster.clock.now  # when it opened
    cluster.clock.advance(1.1)  # b's cached record expires (no pub/sub here)
    assert b.state("dep") == "open"
    cluster.store_down()
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        for elapsed in (2, 10, 20, RESET_S - 0.5):
            cluster.clock.advance(start + elapsed - cluster.clock.now)
            assert [outcome(p, dependency) for p in (a, b) for _ in range(5)] == ["refused"] * 10
        assert dependency.calls == calls and not a.get("dep").shared and not b.get("dep").shared
        for elapsed in (RESET_S + 0.2, 2 * RESET_S + 0.4):  # one trial per process each reset timeout
            cluster.clock.advance(start + elapsed - cluster.clock.now)
            assert [outcome(p, dependency) for p in (a, b) for _ in range(5)] == (["failed"] + ["refused"] * 4) * 2
        assert dependency.calls == calls + 4
    unreachable = [r.getMessage() for r in caplog.records if "circuit-store-unreachable" in r.getMessage()]
    assert len(unreachable) == 2 and all("state=open" in message for message in unreachable), unreachable


def test_failures_count_on_from_the_last_known_counter(cluster: Cluster) -> None:
    """Store down with 2 of 3 failures counted: each process opens after one more failure of its own."""
    a, b = cluster.process(), cluster.process()
    dependency = Dependency()
    assert [outcome(a, dependency) for _ in range(2)] == ["failed", "failed"]
    assert b.get("dep").record().fail_counter == 2
    cluster.store_down()
    cluster.clock.advance(2)
    assert [outcome(p, dependency) for p in (a, b) for _ in range(3)] == ["failed", "refused", "refused"] * 2
    assert dependency.calls == 4 and a.state("dep") == b.state("dep") == "open"


def test_a_process_that_knew_nothing_starts_closed(cluster: Cluster) -> None:
    """A process that never read the record before the outage decides from a closed circuit (fail_max calls)."""
    cluster.process()
    cluster.store_down()
    late = cluster.process()
    dependency = Dependency()
    assert [outcome(late, dependency) for _ in range(FAIL_MAX + 2)] == ["failed"] * FAIL_MAX + ["refused"] * 2


def open_then_store_down(cluster: Cluster) -> tuple[Circuits, Circuits, Dependency]:
    """Two processes that both know the circuit is open; then the store goes down for 2 s."""
    a, b = cluster.process(), cluster.process()
    dependency = Dependency()
    trip(a, dependency)
    cluster.clock.advance(1.1)  # b's cached record expires (no pub/sub here)
    assert b.state("dep") == "open"
    cluster.store_down()
    cluster.clock.advance(2)
    return a, b, dependency


def test_when_the_store_returns_empty_an_opening_still_held_is_written_back(cluster: Cluster) -> None:
    """The store comes back without its data: a process still holding an opening writes it back, the
    others take it, a new process sees it, and a reset made afterwards reaches everyone."""
    a, b, dependency = open_then_store_down(cluster)
    assert outcome(a, dependency) == outcome(b, dependency) == "refused"
    cluster.clock.advance(RESET_S)
    assert outcome(b, dependency) == "failed"  # b's own trial: b's copy is open for another reset timeout
    cluster.recorder.events.clear()
    cluster.store_back(lost_data=True)
    assert outcome(b, dependency) == "refused" and outcome(a, dependency) == "refused"
    assert a.get("dep").shared and b.get("dep").shared
    record = cluster.process().get("dep").record()
    assert record.state == "open" and record.reason == "store-outage"
    assert RESET_S - 3 < record.wait_ms() / 1000 <= RESET_S
    assert cluster.recorder.transitions() == [("closed", "open")]
    a.reset("dep")
    cluster.clock.advance(1.1)  # the others' cached records expire (no pub/sub here)
    dependency.down = False
    assert [outcome(p, dependency) for p in (a, b)] == ["ok", "ok"]


def test_when_the_store_returns_empty_a_lapsed_opening_goes_back_as_one_trial(cluster: Cluster) -> None:
    """The store comes back without its data while the first process back holds an opening whose reset timeout
    has passed: it writes back a 1 ms opening, so the dead dependency gets one trial, not fail_max calls."""
    a, b, dependency = open_then_store_down(cluster)
    assert outcome(a, dependency) == "refused"  # a is on its own copy now
    cluster.clock.advance(RESET_S)  # a's opening has lapsed; the store is back, empty
    cluster.store_back(lost_data=True)
    calls = dependency.calls
    assert outcome(a, dependency) == "refused", "the written-back opening (1 ms) holds this call back"
    record = cluster.process().get("dep").record()
    assert record.state == "open" and record.reason == "store-outage"
    cluster.clock.advance(0.01)
    assert [outcome(p, dependency) for p in (a, b, a, b)] == ["failed", "refused", "refused", "refused"]
    assert dependency.calls == calls + 1, "one trial, not fail_max calls"


def test_when_the_store_returns_its_record_is_taken_back(cluster: Cluster) -> None:
    """A process whose copy holds no opening takes the shared record as it finds it, writing nothing."""
    a, b = cluster.process(), cluster.process()
    dependency = Dependency()
    assert outcome(a, dependency) == "failed"
    assert b.state("dep") == "closed"
    cluster.store_down()
    cluster.clock.advance(2)
    assert b.state("dep") == "closed" and not b.get("dep").shared
    cluster.store_back()
    cluster.process().open_for("dep", 30_000)  # opened by another process once the store is back
    cluster.clock.advance(1.1)
    assert b.state("dep") == "open" and b.get("dep").shared
    assert outcome(b, dependency) == "refused" and dependency.calls == 1
    assert b.get("dep").record().reason == "forced"
