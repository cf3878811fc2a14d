"""The ``prismatic_circuits`` setting: parsed into CircuitSpecs, every error naming the setting."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from celery.exceptions import Ignore, Reject, Retry

from prismatic_celery.circuits import DEFAULT_EXCLUDE, CircuitSpec, parse_circuits
from prismatic_celery.errors import ConfigurationError

SETTING = "prismatic_circuits"


def test_the_documented_example_parses_with_defaults_kept() -> None:
    """The example shape parses; Celery's Retry/Ignore/Reject stay excluded beside the listed class."""
    value = {"payments": {"fail_max": 5, "reset_timeout_s": 30, "exclude": ["json.JSONDecodeError"]}}
    specs = parse_circuits(SETTING, value)
    spec = specs["payments"]
    assert (spec.fail_max, spec.reset_timeout_s, spec.success_threshold, spec.strict) == (5, 30.0, 1, False)
    assert spec.exclude == (Retry, Ignore, Reject, json.JSONDecodeError)
    json.dumps(spec.describe())


def test_missing_keys_take_defaults_and_durations_accept_timedelta() -> None:
    """An empty body is all defaults; a timedelta is converted once to seconds."""
    specs = parse_circuits(SETTING, {"search": None, "mail": {"reset_timeout_s": timedelta(milliseconds=250),
                                                           "strict": True, "call_timeout_s": 2}})
    assert specs["search"] == CircuitSpec()
    assert specs["mail"].reset_timeout_s == 0.25 and specs["mail"].reset_timeout_ms == 250
    assert specs["mail"].strict is True and specs["mail"].call_timeout_ms == 2000
    assert parse_circuits(SETTING, None) == {}


def test_spec_always_keeps_the_default_exclusions() -> None:
    """A spec built in code with its own exclusions still excludes Celery's control-flow exceptions."""
    spec = CircuitSpec(exclude=(KeyError,))
    assert set(DEFAULT_EXCLUDE) <= set(spec.exclude) and KeyError in spec.exclude


@pytest.mark.parametrize(
    ("value", "setting", "fragment"),
    [
        ({"payments": {"fail_mx": 5}}, "prismatic_circuits.payments.fail_mx", "did you mean 'fail_max'"),
        ({"payments": {"fail_max": 0}}, "prismatic_circuits.payments.fail_max", "must be >= 1"),
        ({"payments": {"fail_max": True}}, "prismatic_circuits.payments.fail_max", "expected an integer"),
        ({"payments": {"reset_timeout_s": "30"}}, "prismatic_circuits.payments.reset_timeout_s", "number of seconds"),
        ({"payments": {"reset_timeout_s": 0}}, "prismatic_circuits.payments.reset_timeout_s", "> 0"),
        ({"payments": {"strict": "yes"}}, "prismatic_circuits.payments.strict", "true or false"),
        ({"payments": {"exclude": ["no.such.Module"]}}, "prismatic_circuits.payments.exclude[0]", "cannot import"),
        ({"payments": {"exclude": ["json.dumps"]}}, "prismatic_circuits.payments.exclude[0]", "not a subclass"),
        ({"payments": {"exclude": 3}}, "prismatic_circuits.payments.exclude", "list of strings"),
        ({"payments": [1]}, "prismatic_circuits.payments", "expected a mapping"),
        ({"pay ments": {}}, "prismatic_circuits.pay ments", "circuit name"),
        (["payments"], "prismatic_circuits", "expected a mapping"),
    ],
)
def test_bad_values_fail_naming_the_setting(value: object, setting: str, fragment: str) -> None:
    """Every invalid value raises ConfigurationError naming the exact key and what is wrong."""
    with pytest.raises(ConfigurationError) as info:
        parse_circuits(SETTING, value)
    assert info.value.setting == setting
    assert fragment in info.value.problem
