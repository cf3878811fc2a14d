"""Cache invalidation: pub/sub carries changes between processes; without it, staleness is bounded."""

from __future__ import annotations

import logging
import socket

import pytest

from prismatic_celery.circuits import CircuitOpenError, Circuits, CircuitSpec
from prismatic_celery.circuits.record import CircuitRecord
from prismatic_celery.store import RedisStore
from prismatic_celery.store.keys import Keys
from tests import circuits_fixtures as fx

circuit_env = fx.circuit_env
SPEC = CircuitSpec(fail_max=2, reset_timeout_s=30, call_timeout_s=5)


class Boom(Exception):
    """The dependency failed."""


def fail() -> None:
    raise Boom


def _trip(circuits: Circuits) -> None:
    with pytest.raises(Boom):
        circuits.get("pay").call(fail)
    with pytest.raises(CircuitOpenError):
        circuits.get("pay").call(fail)


def test_a_change_reaches_other_processes_through_pubsub(circuit_env: fx.CircuitEnv) -> None:
    """B caches CLOSED for up to 60 s, yet sees A's trip at once, without re-reading the store."""
    if circuit_env.kind == "memory":
        pytest.skip("the in-process store has no pub/sub (its reads cost no round trip: cache_ttl_s is 0)")
    a = circuit_env.circuits(specs={"pay": SPEC})
    b = circuit_env.circuits(specs={"pay": SPEC}, cache_ttl_s=60)
    assert b.start(wait_s=3) and b.state("pay") == "closed"
    counter = fx.OpCounter(b.store)
    _trip(a)
    fx.wait_until(lambda: b.state("pay") == "open", timeout_s=3, message="B to see the trip")
    assert counter.ops == []
    assert not b.allows("pay") and b.allows("pay").retry_after_s > 29
    a.reset("pay")
    fx.wait_until(lambda: b.state("pay") == "closed", timeout_s=3, message="B to see the reset")
    assert counter.ops == []


def test_without_messages_a_cached_state_is_reread_after_cache_ttl(circuit_env: fx.CircuitEnv) -> None:
    """With no listener, B's cached CLOSED is stale for at most cache_ttl_s (injected monotonic clock)."""
    clock = fx.FakeClock()
    a = circuit_env.circuits(specs={"pay": SPEC}, cache_ttl_s=0)
    b = circuit_env.circuits(specs={"pay": SPEC}, cache_ttl_s=1.0, listen=False, monotonic=clock.monotonic)
    assert b.state("pay") == "closed"
    _trip(a)
    clock.advance(0.99)
    assert b.state("pay") == "closed"
    clock.advance(0.01)
    assert b.state("pay") == "open"


def test_an_older_message_never_replaces_a_newer_record() -> None:
    """Records are ordered by seq: a late message cannot roll a cached OPEN back to CLOSED."""
    circuits = Circuits(fx.MemoryStore(), Keys("t"), specs={"pay": SPEC})
    breaker = circuits.get("pay")
    assert breaker.remember(CircuitRecord("pay", state="open", seq=10, now_ms=1))
    assert not breaker.remember(CircuitRecord("pay", state="closed", seq=9, now_ms=1), newer_only=True)
    assert not breaker.remember(CircuitRecord("pay", state="closed", seq=10, now_ms=1), newer_only=True)
    assert breaker.remember(CircuitRecord("pay", state="closed", seq=11, now_ms=1), newer_only=True)
    assert breaker.remember(CircuitRecord("pay", state="closed", seq=0, now_ms=1))  # key deleted by an operator


def test_with_redis_unreachable_the_breaker_runs_on_in_process_state(caplog: pytest.LogCaptureFixture) -> None:
    """The plugin is never why a call fails: with Redis down, breakers work locally and calls go through."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, retry_s=60)
    circuits = Circuits(store, Keys("down"), specs={"pay": SPEC})
    try:
        with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
            assert circuits.get("pay").call(lambda: "ok") == "ok"
            _trip(circuits)
            assert circuits.state("pay") == "open"
        assert any("store-unavailable" in r.getMessage() for r in caplog.records)
    finally:
        circuits.stop()
