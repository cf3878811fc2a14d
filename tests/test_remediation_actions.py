"""Remediation actions: a fixed registered set, validated parameters, stored data that cannot run code."""

from __future__ import annotations

import builtins
import json
from typing import Any

import pytest

from prismatic_celery import ConfigurationError
from prismatic_celery.remediation import (
    ACTIONS,
    Action,
    CircuitBreak,
    DeadLetter,
    Escalate,
    RecycleProcess,
    RestartChild,
    RetryWithBackoff,
    Shed,
    action_from_config,
    action_from_json,
)
from prismatic_celery.remediation.actions import MAX_DELAY_MS

ONE_OF_EACH: list[Action] = [
    RetryWithBackoff(initial_ms=250, max_ms=8000, jitter_ms=0),
    CircuitBreak(target="payments-api", duration_ms=45_000),
    RestartChild(),
    RecycleProcess(),
    DeadLetter(),
    Shed(),
    Escalate(),
    Escalate(reason="disk_full"),
]


def test_the_registry_holds_exactly_the_seven_designed_actions_under_stable_names() -> None:
    assert dict(ACTIONS) == {
        "retry_with_backoff": RetryWithBackoff,
        "circuit_break": CircuitBreak,
        "restart_child": RestartChild,
        "recycle_process": RecycleProcess,
        "dead_letter": DeadLetter,
        "shed": Shed,
        "escalate": Escalate,
    }
    assert all(cls.name == name for name, cls in ACTIONS.items())


def test_the_registry_cannot_be_extended_at_run_time() -> None:
    with pytest.raises(TypeError):
        ACTIONS["run_anything"] = Shed  # type: ignore[index]


def test_actions_are_frozen_values() -> None:
    action = RetryWithBackoff()
    with pytest.raises(AttributeError):
        action.initial_ms = 5  # type: ignore[misc]
    assert action == RetryWithBackoff(initial_ms=1000, max_ms=30_000, jitter_ms=1000)
    assert hash(action) == hash(RetryWithBackoff())


def test_escalate_defaults_to_the_unknown_failure_pattern_reason() -> None:
    assert Escalate().reason == "unknown_failure_pattern"


def test_str_of_an_action_reads_like_a_call() -> None:
    assert str(RetryWithBackoff()) == "retry_with_backoff(initial_ms=1000, max_ms=30000, jitter_ms=1000)"
    assert str(Shed()) == "shed()"


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: RetryWithBackoff(initial_ms=0), "RetryWithBackoff.initial_ms"),
        (lambda: RetryWithBackoff(initial_ms=1.5), "RetryWithBackoff.initial_ms"),  # type: ignore[arg-type]
        (lambda: RetryWithBackoff(initial_ms=True), "RetryWithBackoff.initial_ms"),
        (lambda: RetryWithBackoff(initial_ms=5000, max_ms=1000), "RetryWithBackoff.max_ms"),
        (lambda: RetryWithBackoff(max_ms=MAX_DELAY_MS + 1), "RetryWithBackoff.max_ms"),
        (lambda: RetryWithBackoff(jitter_ms=-1), "RetryWithBackoff.jitter_ms"),
        (lambda: CircuitBreak(target=""), "CircuitBreak.target"),
        (lambda: CircuitBreak(target="pay*"), "CircuitBreak.target"),
        (lambda: CircuitBreak(target="x", duration_ms=0), "CircuitBreak.duration_ms"),
        (lambda: Escalate(reason="line\nbreak"), "Escalate.reason"),
        (lambda: Escalate(reason="x" * 500), "Escalate.reason"),
    ],
)
def test_direct_construction_validates_every_parameter(build: Any, setting: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        build()
    assert err.value.setting == setting


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("escalate", Escalate()),
        ("restart_child", RestartChild()),
        ("retry_with_backoff", RetryWithBackoff()),
        ({"action": "retry_with_backoff", "initial_ms": 500}, RetryWithBackoff(initial_ms=500)),
        ({"action": "circuit_break", "target": "s3", "duration_ms": 1000}, CircuitBreak("s3", 1000)),
        ({"action": "escalate", "reason": "poison"}, Escalate("poison")),
        (DeadLetter(), DeadLetter()),
    ],
)
def test_action_from_config_accepts_a_name_a_mapping_or_an_action(value: Any, expected: Action) -> None:
    assert action_from_config("prismatic_remediation_rules[0].action", value) == expected


@pytest.mark.parametrize(
    ("value", "setting", "fragment"),
    [
        ("retry_with_backof", "rules[2].action", "did you mean 'retry_with_backoff'"),
        ({"action": "reboot"}, "rules[2].action", "allowed: retry_with_backoff"),
        ({"initial_ms": 5}, "rules[2].action.action", "is required"),
        ({"action": "retry_with_backoff", "initial_s": 1}, "rules[2].action.initial_s", "did you mean 'initial_ms'"),
        ({"action": "retry_with_backoff", "max_ms": "30s"}, "rules[2].action.max_ms", "integer"),
        ({"action": "shed", "queue": "q"}, "rules[2].action.queue", "unknown"),
        ("circuit_break", "rules[2].action.target", "is required"),
        (42, "rules[2].action", "mapping"),
    ],
)
def test_action_from_config_names_the_setting_of_a_bad_action(value: Any, setting: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        action_from_config("rules[2].action", value)
    assert err.value.setting == setting
    assert fragment in str(err.value)


def test_an_unregistered_action_subclass_is_refused() -> None:
    class Sneaky(Shed):
        pass

    with pytest.raises(ConfigurationError, match="not a registered action"):
        action_from_config("x", Sneaky())


@pytest.mark.parametrize("action", ONE_OF_EACH, ids=str)
def test_to_json_round_trips_through_a_mapping_json_text_and_bytes(action: Action) -> None:
    data = action.to_json()
    assert data["action"] == action.name
    text = json.dumps(data)
    assert action_from_json(data) == action
    assert action_from_json(text) == action
    assert action_from_json(text.encode()) == action


HOSTILE: list[Any] = [
    {"action": "os.system", "command": "rm -rf /"},
    {"action": "prismatic_celery.remediation.actions.Shed"},
    {"action": "Action"},
    {"action": "__class__"},
    {"action": "__import__('os').system('id')"},
    {"action": "eval"},
    {"action": "shed", "command": "id"},
    {"action": "retry_with_backoff", "initial_ms": "1000"},
    {"action": "retry_with_backoff", "initial_ms": 1000.0},
    {"action": "retry_with_backoff", "initial_ms": True},
    {"action": "retry_with_backoff", "initial_ms": None},
    {"action": "retry_with_backoff", "initial_ms": {"__reduce__": "os.system"}},
    {"action": "retry_with_backoff", "initial_ms": [1000]},
    {"action": "retry_with_backoff", "max_ms": 10**30},
    {"action": "retry_with_backoff", "initial_ms": -5},
    {"action": "circuit_break"},
    {"action": "circuit_break", "target": {"nested": ["junk"]}},
    {"action": "escalate", "reason": 7},
    {"action": ["shed"]},
    {"action": {"action": "shed"}},
    {"action": None},
    {"action": ""},
    {},
    {"name": "shed"},
    ["shed"],
    "shed",
    "os.system",
    '{"action": "os.system"}',
    '{"action": "shed"',
    b"\xff\xfe not json",
    "[" * 5000,
    '{"action": "shed", "x": ' + "[" * 1500 + "]" * 1500 + "}",
    42,
    None,
    3.5,
    Shed(),
]


@pytest.mark.parametrize("data", HOSTILE, ids=lambda d: repr(d)[:40])
def test_stored_data_that_is_not_a_registered_action_with_valid_params_reads_back_as_none(data: Any) -> None:
    assert action_from_json(data) is None


def test_reading_stored_actions_never_imports_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"import attempted: {args[0]!r}")

    monkeypatch.setattr(builtins, "__import__", refuse)
    for data in HOSTILE:
        assert action_from_json(data) is None
    assert action_from_json({"action": "dead_letter"}) == DeadLetter()
