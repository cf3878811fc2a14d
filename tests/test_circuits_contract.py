"""One body, three backends (memory twin, fakeredis, real Redis): the shared breaker's contract."""

from __future__ import annotations

import json
import logging

import pybreaker
import pytest
from celery.exceptions import Retry

from prismatic_celery.circuits import CircuitOpenError, CircuitSpec, UnknownCircuitError
from prismatic_celery.observability.events import SupervisionEvent, SupervisionListener
from prismatic_celery.store.keys import Keys
from tests import circuits_fixtures as fx

circuit_env = fx.circuit_env
CircuitEnv = fx.CircuitEnv


class Boom(Exception):
    """The dependency failed."""


class NotFound(Exception):
    """A business answer, not a failure of the dependency."""


def fail() -> None:
    raise Boom("dependency down")


def spec(**overrides: object) -> CircuitSpec:
    values: dict[str, object] = {"fail_max": 3, "reset_timeout_s": 0.05, "call_timeout_s": 5.0}
    values.update(overrides)
    return CircuitSpec(**values)  # type: ignore[arg-type]


def trip(env: CircuitEnv, name: str = "pay", **overrides: object) -> fx.Circuits:
    circuits = env.circuits(specs={name: spec(**overrides)}, cache_ttl_s=0)
    breaker = circuits.get(name)
    for _ in range(breaker.fail_max - 1):
        with pytest.raises(Boom):
            breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        breaker.call(fail)
    return circuits


def test_consecutive_failures_open_the_circuit_and_refuse_calls(circuit_env: CircuitEnv) -> None:
    """fail_max failures open it; the tripping failure raises CircuitOpenError from the original; calls stop."""
    recorder = fx.Recorder()
    circuits = circuit_env.circuits(specs={"pay": spec()}, listeners=(recorder,), cache_ttl_s=0)
    breaker = circuits.get("pay")
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert circuits.state("pay") == "closed" and breaker.fail_counter == 2
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(fail)
    assert isinstance(info.value.__cause__, Boom) and isinstance(info.value, pybreaker.CircuitBreakerError)
    calls: list[int] = []
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(lambda: calls.append(1))
    assert calls == [] and refused.value.state == "open" and 0 < refused.value.retry_after_s <= 0.05
    assert recorder.transitions() == [("closed", "open")]
    assert recorder.events[0].fields["name"] == "pay" and recorder.events[0].fields["reason"] == "failures"


def test_a_success_resets_the_consecutive_failure_count(circuit_env: CircuitEnv) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0).get("pay")
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.call(lambda: 42) == 42
    assert breaker.fail_counter == 0
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.current_state == "closed"


def test_failures_from_every_process_add_up(circuit_env: CircuitEnv) -> None:
    """Two registries (two processes) share one counter: the third failure, wherever it happens, opens it."""
    a = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0)
    b = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0)
    with pytest.raises(Boom):
        a.get("pay").call(fail)
    with pytest.raises(Boom):
        b.get("pay").call(fail)
    with pytest.raises(CircuitOpenError):
        a.get("pay").call(fail)
    assert b.state("pay") == "open"


def test_after_the_reset_timeout_exactly_one_trial_runs_and_its_success_closes(circuit_env: CircuitEnv) -> None:
    """Once the timeout passes, the first caller becomes the only trial; others are refused until it settles."""
    recorder = fx.Recorder()
    a = trip(circuit_env)
    b = circuit_env.circuits(specs={"pay": spec()}, listeners=(recorder,), cache_ttl_s=0)
    circuit_env.advance(0.06)
    assert b.allows("pay")
    with b.guard("pay"):
        with pytest.raises(CircuitOpenError) as info:
            a.get("pay").call(lambda: None)
        assert info.value.state == "half-open" and info.value.retry_after_s > 0
        assert not a.allows("pay") and a.allows("pay").state == "half-open"
    assert a.state("pay") == "closed" and a.get("pay").call(lambda: "ok") == "ok"
    assert recorder.transitions() == [("open", "half-open"), ("half-open", "closed")]


def test_a_failed_trial_reopens_for_another_timeout(circuit_env: CircuitEnv) -> None:
    """The trial's failure opens the circuit again (CircuitOpenError from the failure)."""
    circuits = trip(circuit_env)
    circuit_env.advance(0.06)
    with pytest.raises(CircuitOpenError) as info:
        circuits.get("pay").call(fail)
    assert isinstance(info.value.__cause__, Boom)
    record = circuits.get("pay").record()
    assert record.state == "open" and record.reason == "trial-failed" and record.permits == 0
    assert 0 < circuits.allows("pay").retry_after_s <= 0.05


def test_an_abandoned_trial_is_reclaimed_after_its_lease(circuit_env: CircuitEnv) -> None:
    """A trial whose holder died (never settled) blocks others only until call_timeout_s."""
    circuits = trip(circuit_env, call_timeout_s=0.05)
    circuit_env.advance(0.06)
    abandoned = circuits.get("pay").admit()
    assert abandoned.kind == "trial"
    with pytest.raises(CircuitOpenError):
        circuits.get("pay").admit()
    circuit_env.advance(0.06)
    assert circuits.get("pay").admit().kind == "trial"


def test_excluded_exceptions_pass_through_and_count_as_success(circuit_env: CircuitEnv) -> None:
    """Celery's Retry (a default) and a configured class are re-raised untouched and reset the count."""
    breaker = circuit_env.circuits(specs={"pay": spec(exclude=(NotFound,))}, cache_ttl_s=0).get("pay")
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    for exc in (Retry("later"), NotFound("no such order")):
        with pytest.raises(type(exc)), breaker.guard():
            raise exc
    assert breaker.fail_counter == 0 and breaker.current_state == "closed"


def test_keyboard_interrupt_releases_the_trial_without_a_verdict(circuit_env: CircuitEnv) -> None:
    """A BaseException is neither success nor failure: the trial permit is freed, the state stays half-open."""
    circuits = trip(circuit_env)
    circuit_env.advance(0.06)
    with pytest.raises(KeyboardInterrupt), circuits.guard("pay"):
        raise KeyboardInterrupt
    record = circuits.get("pay").record()
    assert record.state == "half-open" and record.permits == 0
    assert circuits.get("pay").admit().kind == "trial"


def test_open_for_forces_open_for_a_fixed_time_and_never_shortens(circuit_env: CircuitEnv) -> None:
    """open_for (the circuit_break remediation) opens every process's view; a shorter one keeps the longer."""
    recorder = fx.Recorder()
    circuits = circuit_env.circuits(specs={"pay": spec()}, listeners=(recorder,), cache_ttl_s=0)
    other = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0)
    record = circuits.open_for("pay", 200)
    assert record.state == "open" and record.reason == "forced"
    assert record.open_until_ms - record.now_ms == 200
    assert circuits.open_for("pay", 10).open_until_ms == record.open_until_ms
    assert other.state("pay") == "open" and 0.1 < other.allows("pay").retry_after_s <= 0.2
    circuit_env.advance(0.21)
    assert other.allows("pay")
    assert circuits.reset("pay").state == "closed"
    assert recorder.transitions() == [("closed", "open"), ("open", "open"), ("open", "closed")]
    with pytest.raises(ValueError):
        circuits.open_for("pay", 0)


def test_a_success_on_a_healthy_circuit_writes_nothing(circuit_env: CircuitEnv) -> None:
    """Closed with no failure counted: a successful call costs no write, and no round trip while cached.

    (The state is read once, when the breaker is built, as pybreaker's constructor reads it.)
    """
    counted = circuit_env.circuits(cache_ttl_s=60, listen=False)
    counter = fx.OpCounter(counted.store)
    circuits = circuit_env.circuits(specs={"pay": spec()}, store=counted.store, cache_ttl_s=60, listen=False)
    assert counter.ops == ["read"]
    for _ in range(100):
        assert circuits.get("pay").call(lambda: 1) == 1
        with circuits.guard("pay"):
            pass
        assert circuits.allows("pay")
    assert counter.ops == ["read"]
    with pytest.raises(Boom):
        circuits.get("pay").call(fail)
    counter.clear()
    circuits.get("pay").call(lambda: 1)
    circuits.get("pay").call(lambda: 1)
    assert counter.ops == ["success"]


def test_the_record_is_one_readable_hash_under_the_namespace(circuit_env: CircuitEnv) -> None:
    """State lives in prismatic:{<ns>}:circuit:<name> as plain fields an operator can HGETALL."""
    circuits = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0)
    with pytest.raises(Boom):
        circuits.get("pay").call(fail)
    key = Keys(circuit_env.namespace).key("circuit", "pay")
    assert circuits.get("pay").storage.key == key
    fields = circuits.store.hgetall(key)
    assert fields["state"] == "closed" and fields["fail_counter"] == "1" and int(fields["seq"]) > 0
    assert circuits.channel == Keys(circuit_env.namespace).key("circuit-events")


def test_a_corrupt_record_is_read_as_closed_with_a_warning(
    circuit_env: CircuitEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage in the hash is skipped with a warning and overwritten by the next change."""
    circuits = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0)
    key = circuits.get("pay").storage.key
    circuits.store.hset(key, {"state": "banana", "fail_counter": "x"})
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        assert circuits.state("pay") == "closed"
        with pytest.raises(Boom):
            circuits.get("pay").call(fail)
    assert any("circuit-corrupt-record" in r.getMessage() for r in caplog.records)
    assert circuits.store.hgetall(key)["state"] == "closed"
    assert circuits.store.hgetall(key)["fail_counter"] == "1"


def test_listener_errors_never_break_the_protected_call(circuit_env: CircuitEnv) -> None:
    """A supervision listener and a pybreaker listener that raise are logged; the call's outcome stands."""

    class Broken(SupervisionListener):
        def on_circuit(self, event: SupervisionEvent) -> None:
            raise RuntimeError("listener bug")

    class BrokenPy(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: object, old: object, new: object) -> None:
            raise RuntimeError("pybreaker listener bug")

        def failure(self, cb: object, exc: BaseException) -> None:
            raise RuntimeError("pybreaker listener bug")

    recorder = fx.Recorder()
    circuits = circuit_env.circuits(specs={"pay": spec()}, listeners=(Broken(), recorder), cache_ttl_s=0)
    circuits.get("pay").add_listener(BrokenPy())
    for _ in range(2):
        with pytest.raises(Boom), circuits.guard("pay"):
            fail()
    with pytest.raises(CircuitOpenError), circuits.guard("pay"):
        fail()
    assert recorder.transitions() == [("closed", "open")]


def test_strict_breakers_admit_no_more_calls_than_the_failure_budget(circuit_env: CircuitEnv) -> None:
    """Strict: every call holds a permit, and failures plus calls in flight never exceed fail_max."""
    breaker = circuit_env.circuits(specs={"pay": spec(strict=True)}, cache_ttl_s=0).get("pay")
    tickets = [breaker.admit() for _ in range(3)]
    assert [t.kind for t in tickets] == ["permit"] * 3
    with pytest.raises(CircuitOpenError) as info:
        breaker.admit()
    assert info.value.state == "closed" and info.value.retry_after_s > 0
    breaker.succeeded(tickets[0])
    with pytest.raises(Boom), breaker.guard():  # the freed permit
        fail()
    assert breaker.fail_counter == 1 and breaker.record().permits == 2
    with pytest.raises(CircuitOpenError):
        breaker.admit()  # 1 failure + 2 in flight = fail_max
    breaker.succeeded(tickets[1])
    assert breaker.fail_counter == 0 and breaker.admit().kind == "permit"


def test_decorator_guard_and_unknown_names(circuit_env: CircuitEnv) -> None:
    """protect() wraps a function (name kept); unknown circuit names fail loudly; snapshot is JSON."""
    circuits = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0)

    @circuits.protect("pay")
    def charge(amount: int) -> int:
        """Charge a card."""
        return amount * 2

    assert charge(21) == 42 and charge.__name__ == "charge"
    for call in (lambda: circuits.get("nope"), lambda: circuits.state("nope"), lambda: circuits.open_for("nope", 5)):
        with pytest.raises(UnknownCircuitError, match="declared: pay"):
            call()
    circuits.open_for("pay", 1000)
    snapshot = json.loads(json.dumps(circuits.snapshot()))
    assert snapshot["pay"]["state"] == "open" and snapshot["pay"]["fail_max"] == 3
    assert 0.9 < snapshot["pay"]["retry_after_s"] <= 1.0
    assert "celery.exceptions.Retry" in snapshot["pay"]["exclude"]


def test_plain_pybreaker_accessors_work_on_the_storage(circuit_env: CircuitEnv) -> None:
    """The storage also answers pybreaker's own interface, each accessor atomic."""
    storage = circuit_env.circuits(specs={"pay": spec()}, cache_ttl_s=0).get("pay").storage
    storage.increment_counter()
    storage.increment_counter()
    assert storage.counter == 2
    storage.reset_counter()
    storage.increment_success_counter()
    assert (storage.counter, storage.success_counter) == (0, 1)
    storage.state = "open"
    assert storage.state == "open" and storage.opened_at is not None
    storage.state = "closed"
    assert storage.state == "closed"
