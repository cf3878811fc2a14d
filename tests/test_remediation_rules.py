"""Remediation rules: every criterion, first match wins, the Python API, and config errors naming the setting."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import pytest

from prismatic_celery import ConfigurationError
from prismatic_celery.remediation import (
    DEFAULT_RULES,
    CircuitBreak,
    DeadLetter,
    Decision,
    Escalate,
    Match,
    RecycleProcess,
    RemediationRegistry,
    RestartChild,
    RetryWithBackoff,
    Rule,
    Shed,
    parse_rules,
)

SETTING = "prismatic_remediation_rules"


def named(dotted: str, base: type[BaseException] = Exception) -> type[Exception]:
    """A local class whose ``module.QualName`` is ``dotted``, standing in for a library not installed."""
    module, _, qualname = dotted.rpartition(".")
    return type(qualname, (base,), {"__module__": module, "__qualname__": qualname})


class PaymentDeclined(Exception):
    pass


class CardExpired(PaymentDeclined):
    pass


def hit(match: Match, exc: BaseException, **facts: Any) -> bool:
    return match.matches(exc, **facts)


# --- each criterion ------------------------------------------------------------------------------


def test_an_exception_class_matches_itself_and_its_subclasses_only() -> None:
    match = Match(exceptions=(PaymentDeclined,))
    assert hit(match, PaymentDeclined())
    assert hit(match, CardExpired())
    assert not hit(match, ValueError())


def test_a_dotted_name_matches_any_class_in_the_exceptions_mro_by_qualified_name() -> None:
    base = named("vendorlib.errors.TransientError")
    child = type("Flaky", (base,), {"__module__": "vendorlib.client"})
    match = Match(exceptions=("vendorlib.errors.TransientError",))
    assert hit(match, base())
    assert hit(match, child())
    assert not hit(match, named("otherlib.errors.TransientError")())
    assert not hit(match, named("vendorlib.TransientError")())


def test_a_name_without_a_dot_is_a_builtin() -> None:
    match = Match(exceptions=("ConnectionError",))
    assert match.exceptions == ("builtins.ConnectionError",)
    assert hit(match, ConnectionRefusedError())
    assert not hit(match, named("mylib.ConnectionError")())


class Outer:
    class Inner(Exception):
        pass


def test_nested_classes_match_by_their_full_qualified_name() -> None:
    dotted = f"{Outer.Inner.__module__}.{Outer.Inner.__qualname__}"
    assert hit(Match(exceptions=(dotted,)), Outer.Inner())


def test_matching_by_name_never_imports_the_named_module() -> None:
    match = Match(exceptions=("prismatic_test_never_installed.errors.Boom",))
    assert not hit(match, ValueError())
    assert "prismatic_test_never_installed" not in sys.modules
    assert "prismatic_test_never_installed.errors" not in sys.modules


def test_the_message_regex_is_searched_in_str_of_the_exception() -> None:
    match = Match(message=r"deadlock|lock wait timeout")
    assert isinstance(match.message, re.Pattern)
    assert hit(match, RuntimeError("ERROR: deadlock detected"))
    assert not hit(match, RuntimeError("syntax error"))
    assert hit(Match(message=re.compile("TIMEOUT", re.IGNORECASE)), RuntimeError("timeout"))


def test_a_message_is_only_scanned_up_to_its_first_4096_characters() -> None:
    match = Match(message="needle")
    assert hit(match, RuntimeError("x" * 4000 + "needle"))
    assert not hit(match, RuntimeError("x" * 5000 + "needle"))


def test_the_task_glob_matches_the_task_name_case_sensitively() -> None:
    match = Match(task="billing.*")
    assert hit(match, ValueError(), task_name="billing.charge")
    assert not hit(match, ValueError(), task_name="Billing.charge")
    assert not hit(match, ValueError(), task_name="reports.build")
    assert not hit(match, ValueError(), task_name=None)


def test_the_domain_must_be_equal() -> None:
    match = Match(domain="payments")
    assert hit(match, ValueError(), domain="payments")
    assert not hit(match, ValueError(), domain="payments-eu")
    assert not hit(match, ValueError(), domain=None)


def test_the_failure_class_must_be_equal() -> None:
    match = Match(failure_class="external_dependency")
    assert hit(match, ValueError(), failure_class="external_dependency")
    assert not hit(match, ValueError(), failure_class="logic_error")
    assert not hit(match, ValueError())


def test_every_given_criterion_must_hold() -> None:
    match = Match(exceptions=(PaymentDeclined,), message="expired", task="billing.*", domain="payments",
                  failure_class="external_dependency")
    facts = {"task_name": "billing.charge", "domain": "payments", "failure_class": "external_dependency"}
    assert hit(match, CardExpired("card expired"), **facts)
    assert not hit(match, CardExpired("insufficient funds"), **facts)
    assert not hit(match, ValueError("card expired"), **facts)
    assert not hit(match, CardExpired("card expired"), **{**facts, "task_name": "reports.x"})
    assert not hit(match, CardExpired("card expired"), **{**facts, "domain": "reports"})
    assert not hit(match, CardExpired("card expired"), **{**facts, "failure_class": "logic_error"})


def test_an_empty_match_matches_every_failure() -> None:
    assert hit(Match(), KeyboardInterrupt())


def test_a_single_class_or_name_is_a_list_of_one() -> None:
    assert Match(exceptions=KeyError).exceptions == (KeyError,)  # type: ignore[arg-type]
    assert Match(exceptions="a.B").exceptions == ("a.B",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"exceptions": ("os.system()",)}, "Match.exceptions[0]"),
        ({"exceptions": (int,)}, "Match.exceptions[0]"),
        ({"exceptions": 5}, "Match.exceptions"),
        ({"message": "(unclosed"}, "Match.message"),
        ({"message": re.compile(b"bytes")}, "Match.message"),
        ({"task": ""}, "Match.task"),
        ({"domain": "a:b"}, "Match.domain"),
        ({"failure_class": "bug"}, "Match.failure_class"),
    ],
)
def test_match_validates_its_criteria(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        Match(**kwargs)
    assert err.value.setting == setting


# --- order and the registry ----------------------------------------------------------------------


def test_the_first_matching_rule_wins() -> None:
    registry = RemediationRegistry(
        [
            Rule(Match(exceptions=(CardExpired,)), DeadLetter(), name="expired"),
            Rule(Match(exceptions=(PaymentDeclined,)), Shed(), name="declined"),
            Rule(Match(exceptions=(CardExpired,)), RestartChild(), name="never reached"),
        ],
        defaults=(),
    )
    assert registry.lookup(CardExpired(), task_name="t", domain=None) == Decision("expired", DeadLetter())
    assert registry.lookup(PaymentDeclined(), task_name="t", domain=None) == Decision("declined", Shed())


def test_user_rules_come_before_the_defaults() -> None:
    registry = RemediationRegistry([Rule(Match(exceptions=(ConnectionRefusedError,)), Shed(), name="mine")])
    assert registry.lookup(ConnectionRefusedError(), task_name="t", domain=None) == Decision("mine", Shed())
    assert registry.lookup(ConnectionResetError(), task_name="t", domain=None).rule_name == "default.network"
    assert registry.rules[1:] == DEFAULT_RULES


def test_added_rules_go_after_earlier_user_rules_and_before_the_defaults() -> None:
    registry = RemediationRegistry([Rule(Match(task="a.*"), Shed(), name="first")])
    registry.add(Rule(Match(exceptions=(ConnectionError,)), DeadLetter(), name="second"))
    assert [r.name for r in registry.rules][:3] == ["first", "second", "default.out_of_memory"]
    assert registry.lookup(ConnectionError(), task_name="b.x", domain=None) == Decision("second", DeadLetter())
    assert registry.lookup(ConnectionError(), task_name="a.x", domain=None) == Decision("first", Shed())


def test_no_matching_rule_escalates_as_an_unknown_failure_pattern() -> None:
    decision = RemediationRegistry().lookup(ValueError("bug"), task_name="t", domain="d")
    assert decision == Decision(None, Escalate("unknown_failure_pattern"))
    assert not decision.matched


def test_an_empty_registry_without_defaults_escalates_everything() -> None:
    registry = RemediationRegistry(defaults=())
    assert len(registry) == 0
    assert registry.lookup(ConnectionError(), task_name="t", domain=None).action == Escalate()


def test_unnamed_rules_are_named_after_their_position() -> None:
    registry = RemediationRegistry([Rule(Match(task="x"), Shed())], defaults=())
    rule = registry.add(Rule(Match(task="y"), Shed()))
    assert [r.name for r in registry.rules] == ["rules[0]", "rules[1]"]
    assert rule.name == "rules[1]"


def test_duplicate_rule_names_are_refused() -> None:
    registry = RemediationRegistry([Rule(Match(), Shed(), name="same")], defaults=())
    with pytest.raises(ConfigurationError, match="duplicate rule name 'same'"):
        registry.add(Rule(Match(), DeadLetter(), name="same"))
    with pytest.raises(ConfigurationError, match="duplicate"):
        RemediationRegistry([Rule(Match(), Shed(), name="default.network")])


def test_a_rule_accepts_only_registered_actions() -> None:
    assert Rule(Match(), "dead_letter").action == DeadLetter()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as err:
        Rule(Match(), "format_disk")  # type: ignore[arg-type]
    assert err.value.setting == "Rule.action"


def test_the_decorator_on_an_exception_class_registers_the_class_and_returns_it_unchanged() -> None:
    registry = RemediationRegistry(defaults=())

    @registry.rule("dead_letter", task="billing.*")
    class InvoiceRejected(ValueError):
        pass

    assert isinstance(InvoiceRejected, type)
    [rule] = registry.rules
    assert rule.match.exceptions == (InvoiceRejected,)
    assert rule.name == InvoiceRejected.__qualname__
    assert registry.lookup(InvoiceRejected(), task_name="billing.x", domain=None).action == DeadLetter()
    assert registry.lookup(InvoiceRejected(), task_name="other", domain=None).action == Escalate()
    assert registry.lookup(ValueError(), task_name="billing.x", domain=None).action == Escalate()


def test_the_decorator_on_a_function_registers_the_given_criteria_under_the_functions_name() -> None:
    registry = RemediationRegistry(defaults=())

    @registry.rule({"action": "circuit_break", "target": "s3"}, exceptions=["botocore.exceptions.EndpointError"])
    def s3_outage() -> None:
        """S3 endpoints failing: stop calling them for a while."""

    assert s3_outage() is None
    [rule] = registry.rules
    assert rule.name == s3_outage.__qualname__
    assert registry.lookup(named("botocore.exceptions.EndpointError")(), task_name="t", domain=None) == Decision(
        rule.name, CircuitBreak("s3")
    )


def test_the_decorator_combines_given_exceptions_with_the_decorated_class_and_takes_a_name() -> None:
    registry = RemediationRegistry(defaults=())

    @registry.rule(RetryWithBackoff(initial_ms=10, max_ms=10, jitter_ms=0), exceptions=KeyError, name="flaky")
    class Flaky(Exception):
        pass

    assert registry.rules[0].match.exceptions == (KeyError, Flaky)
    assert registry.lookup(KeyError(), task_name="t", domain=None).rule_name == "flaky"


def test_the_decorator_validates_its_criteria_when_called_not_when_applied() -> None:
    registry = RemediationRegistry(defaults=())
    with pytest.raises(ConfigurationError, match="regular expression"):
        registry.rule("shed", message="(")
    with pytest.raises(ConfigurationError):
        registry.rule("teleport")
    assert len(registry) == 0


def test_a_broken_str_does_not_break_lookup() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    registry = RemediationRegistry([Rule(Match(message="x"), Shed())], defaults=())
    assert registry.lookup(Unprintable(), task_name="t", domain=None).action == Escalate()


def test_a_rule_that_raises_while_matching_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Hostile(type):
        def __instancecheck__(cls, instance: object) -> bool:
            raise RuntimeError("boom")

    class Trap(Exception, metaclass=Hostile):
        pass

    registry = RemediationRegistry(
        [Rule(Match(exceptions=(Trap,)), Shed(), name="trap"), Rule(Match(), DeadLetter(), name="next")],
        defaults=(),
    )
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        assert registry.lookup(ValueError(), task_name="t", domain=None) == Decision("next", DeadLetter())
    assert "'trap' failed to evaluate" in caplog.text


# --- configuration -------------------------------------------------------------------------------


def test_parse_rules_reads_every_criterion_and_action_form() -> None:
    rules = parse_rules(
        SETTING,
        [
            {
                "name": "payments-deadlock",
                "match": {
                    "exceptions": ["psycopg2.errors.DeadlockDetected", "ConnectionError"],
                    "message": "deadlock",
                    "task": "payments.*",
                    "domain": "payments",
                    "failure_class": "state_corruption",
                },
                "action": {"action": "retry_with_backoff", "initial_ms": 50, "max_ms": 800, "jitter_ms": 25},
            },
            {"match": {"exceptions": "myapp.errors.Poison"}, "action": "dead_letter"},
            {"match": {}, "action": {"action": "escalate", "reason": "catch_all"}},
        ],
    )
    assert [r.name for r in rules] == ["payments-deadlock", f"{SETTING}[1]", f"{SETTING}[2]"]
    first = rules[0]
    assert first.match.exceptions == ("psycopg2.errors.DeadlockDetected", "builtins.ConnectionError")
    assert first.match.pattern is not None and first.match.pattern.pattern == "deadlock"
    assert (first.match.task, first.match.domain, first.match.failure_class) == (
        "payments.*", "payments", "state_corruption"
    )
    assert first.action == RetryWithBackoff(initial_ms=50, max_ms=800, jitter_ms=25)
    assert rules[1].action == DeadLetter()
    assert rules[2].action == Escalate("catch_all")


def test_parsed_rules_drive_a_registry() -> None:
    registry = RemediationRegistry(parse_rules(SETTING, [{"match": {"task": "reports.*"}, "action": "shed"}]))
    assert registry.lookup(ValueError(), task_name="reports.daily", domain=None) == Decision(f"{SETTING}[0]", Shed())
    assert registry.lookup(MemoryError(), task_name="other", domain=None).action == RecycleProcess()


def test_no_rules_setting_means_no_user_rules() -> None:
    assert parse_rules(SETTING, None) == ()
    assert parse_rules(SETTING, []) == ()


OK_MATCH = {"exceptions": ["ValueError"]}

BAD_RULES: list[tuple[str, Any, str, str]] = [
    ("a mapping instead of a list", {"match": OK_MATCH, "action": "shed"}, SETTING, "list of rules"),
    ("a string instead of a list", "dead_letter", SETTING, "list of rules"),
    ("a rule that is not a mapping", ["dead_letter"], f"{SETTING}[0]", "mapping"),
    ("a misspelt rule key", [{"match": OK_MATCH, "acton": "shed"}], f"{SETTING}[0].acton", "did you mean 'action'"),
    ("a rule without an action", [{"match": OK_MATCH}], f"{SETTING}[0].action", "is required"),
    ("a rule without a match", [{"action": "shed"}], f"{SETTING}[0].match", "is required"),
    ("a match that is not a mapping", [{"match": ["ValueError"], "action": "shed"}], f"{SETTING}[0].match",
     "mapping"),
    ("a misspelt match key", [{"match": {"exception": ["X"]}, "action": "shed"}], f"{SETTING}[0].match.exception",
     "did you mean 'exceptions'"),
    ("a bad regex", [{"match": {"message": "([a-z"}, "action": "shed"}], f"{SETTING}[0].match.message",
     "invalid regular expression"),
    ("a message that is not a string", [{"match": {"message": 5}, "action": "shed"}], f"{SETTING}[0].match.message",
     "string"),
    ("a class name that is code", [{"match": {"exceptions": ["os.system('id')"]}, "action": "shed"}],
     f"{SETTING}[0].match.exceptions[0]", "dotted class name"),
    ("a non-string in exceptions", [{"match": {"exceptions": ["ValueError", 3]}, "action": "shed"}],
     f"{SETTING}[0].match.exceptions[1]", "exception class"),
    ("exceptions that are not a list", [{"match": {"exceptions": 3}, "action": "shed"}],
     f"{SETTING}[0].match.exceptions", "list"),
    ("an empty task glob", [{"match": {"task": " "}, "action": "shed"}], f"{SETTING}[0].match.task", "empty"),
    ("a domain with a colon", [{"match": {"domain": "a:b"}, "action": "shed"}], f"{SETTING}[0].match.domain", "':'"),
    ("a misspelt failure class", [{"match": {"failure_class": "external_dependancy"}, "action": "shed"}],
     f"{SETTING}[0].match.failure_class", "did you mean 'external_dependency'"),
    ("an unknown action in the second rule",
     [{"match": OK_MATCH, "action": "shed"}, {"match": OK_MATCH, "action": "reboot_host"}],
     f"{SETTING}[1].action", "allowed:"),
    ("an action name that is code", [{"match": OK_MATCH, "action": "os.system"}], f"{SETTING}[0].action",
     "not allowed"),
    ("an action mapping without its name", [{"match": OK_MATCH, "action": {"initial_ms": 5}}],
     f"{SETTING}[0].action.action", "is required"),
    ("an unknown action parameter", [{"match": OK_MATCH, "action": {"action": "retry_with_backoff", "initial_s": 1}}],
     f"{SETTING}[0].action.initial_s", "did you mean 'initial_ms'"),
    ("a parameter of the wrong type",
     [{"match": OK_MATCH, "action": {"action": "retry_with_backoff", "initial_ms": "1s"}}],
     f"{SETTING}[0].action.initial_ms", "integer"),
    ("max below initial", [{"match": OK_MATCH, "action": {"action": "retry_with_backoff", "initial_ms": 500,
                                                          "max_ms": 100}}],
     f"{SETTING}[0].action.max_ms", ">= initial_ms"),
    ("a circuit break without a target", [{"match": OK_MATCH, "action": {"action": "circuit_break"}}],
     f"{SETTING}[0].action.target", "is required"),
    ("parameters on an action that takes none", [{"match": OK_MATCH, "action": {"action": "shed", "ratio": 0.5}}],
     f"{SETTING}[0].action.ratio", "unknown"),
    ("an empty rule name", [{"match": OK_MATCH, "action": "shed", "name": ""}], f"{SETTING}[0].name", "empty"),
    ("two rules with one name",
     [{"match": OK_MATCH, "action": "shed", "name": "r"}, {"match": OK_MATCH, "action": "shed", "name": "r"}],
     f"{SETTING}[1].name", "duplicate"),
]


@pytest.mark.parametrize(("value", "setting", "fragment"), [b[1:] for b in BAD_RULES], ids=[b[0] for b in BAD_RULES])
def test_a_bad_rule_config_fails_naming_the_setting_path(value: Any, setting: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_rules(SETTING, value)
    assert err.value.setting == setting
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"{setting}: ")
