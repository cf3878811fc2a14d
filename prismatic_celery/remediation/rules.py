"""Remediation rules: which action a failure gets.

A :class:`Rule` pairs a :class:`Match` with an :class:`~.actions.Action`. The
:class:`~.registry.RemediationRegistry` (``remediation/registry.py``) holds user rules followed by
:data:`~.defaults.DEFAULT_RULES`; the first rule whose every criterion holds decides, and a failure
no rule matches escalates (``Escalate("unknown_failure_pattern")``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, TypeVar, get_args

from ..describe import exception_text
from ..errors import ConfigurationError
from ..log import get_logger
from ..validate import as_choice, as_class, as_mapping, as_str, reject_unknown
from .actions import Action, action_from_config

__all__ = [
    "EXTERNAL_DEPENDENCY",
    "FAILURE_CLASSES",
    "LOGIC_ERROR",
    "RESOURCE_EXHAUSTION",
    "STATE_CORRUPTION",
    "Decision",
    "ExceptionSpec",
    "FailureClass",
    "Match",
    "Rule",
    "parse_overrides",
    "parse_rules",
    "qualified_names",
]

#: The failure classes of the lessons' classifier (``lessons/classify.py``): defined here, once.
FailureClass = Literal["state_corruption", "external_dependency", "resource_exhaustion", "logic_error"]
FAILURE_CLASSES: tuple[FailureClass, ...] = get_args(FailureClass)
STATE_CORRUPTION: FailureClass = "state_corruption"
EXTERNAL_DEPENDENCY: FailureClass = "external_dependency"
RESOURCE_EXHAUSTION: FailureClass = "resource_exhaustion"
LOGIC_ERROR: FailureClass = "logic_error"

#: Only the start of a message is searched, bounding the cost of a regex on a huge message.
MESSAGE_SCAN_CHARS = 4096

_MATCH_KEYS = ("exceptions", "message", "task", "domain", "failure_class")
_RULE_KEYS = ("match", "action", "name")

_log = get_logger("remediation")

T = TypeVar("T")
ExceptionSpec = type[BaseException] | str


def qualified_names(exc_type: type[BaseException]) -> frozenset[str]:
    """``module.QualName`` of ``exc_type`` and of every class in its MRO (builtins as ``builtins.X``)."""
    return frozenset(f"{cls.__module__}.{cls.__qualname__}" for cls in exc_type.__mro__)


def _dotted(setting: str, value: str) -> str:
    parts = value.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ConfigurationError(
            setting, f"{value!r} is not a dotted class name such as 'redis.exceptions.ConnectionError'"
        )
    return value if len(parts) > 1 else f"builtins.{value}"


def _exceptions(setting: str, value: object) -> tuple[ExceptionSpec, ...]:
    if isinstance(value, (str, type)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(setting, f"expected a list of exception classes or dotted names, got {value!r}")
    specs: list[ExceptionSpec] = []
    for i, item in enumerate(value):
        where = f"{setting}[{i}]"
        if isinstance(item, str):
            specs.append(_dotted(where, item.strip()))
        elif isinstance(item, type) and issubclass(item, BaseException):
            specs.append(item)
        else:
            raise ConfigurationError(where, f"expected an exception class or a dotted class name, got {item!r}")
    return tuple(specs)


def _message(setting: str, value: object) -> re.Pattern[str] | None:
    if value is None:
        return None
    if isinstance(value, re.Pattern):
        if not isinstance(value.pattern, str):
            raise ConfigurationError(setting, "a message pattern must be a str pattern, not bytes")
        return value
    text = as_str(setting, value)
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigurationError(setting, f"invalid regular expression {text!r}: {exc}") from exc


def _optional(setting: str, value: object, check: Callable[[str, object], T]) -> T | None:
    return None if value is None else check(setting, value)


def _domain(setting: str, value: object) -> str:
    name = as_str(setting, value)
    if ":" in name:
        raise ConfigurationError(setting, "a domain name never contains ':', so this rule could never match")
    return name


def _failure_class(setting: str, value: object) -> str:
    return as_choice(setting, value, FAILURE_CLASSES)


class _MatchFields(TypedDict):
    """A :class:`Match`'s criteria, validated."""

    exceptions: tuple[ExceptionSpec, ...]
    message: re.Pattern[str] | None
    task: str | None
    domain: str | None
    failure_class: str | None


@dataclass(frozen=True)
class Match:
    """What a rule applies to; every criterion given must hold (none given: every failure).

    ``exceptions``: classes (``isinstance``, so subclasses match) or dotted names such as
    ``"psycopg2.OperationalError"`` compared with the ``module.QualName`` of every class in the
    exception's MRO, without importing anything (a name without a dot is a builtin; a misspelt
    name simply never matches). ``message``: a regex searched in ``str(exc)`` (its first
    :data:`MESSAGE_SCAN_CHARS` characters). ``task``: a task-name glob (``fnmatchcase``).
    ``domain``: the exact domain name. ``failure_class``: one of :data:`FAILURE_CLASSES`.
    """

    exceptions: tuple[ExceptionSpec, ...] = ()
    message: str | re.Pattern[str] | None = None
    task: str | None = None
    domain: str | None = None
    failure_class: str | None = None

    def __post_init__(self) -> None:
        values = self._check("Match", self.__dict__)
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @staticmethod
    def _check(setting: str, data: Mapping[str, object]) -> _MatchFields:
        return {
            "exceptions": _exceptions(f"{setting}.exceptions", data.get("exceptions", ())),
            "message": _message(f"{setting}.message", data.get("message")),
            "task": _optional(f"{setting}.task", data.get("task"), as_str),
            "domain": _optional(f"{setting}.domain", data.get("domain"), _domain),
            "failure_class": _optional(f"{setting}.failure_class", data.get("failure_class"), _failure_class),
        }

    @classmethod
    def from_config(cls, setting: str, value: object) -> Match:
        """Build from ``{"exceptions": [...], "message": regex, "task": glob, "domain": str, "failure_class": str}``."""
        data = as_mapping(setting, value)
        reject_unknown(setting, data, _MATCH_KEYS)
        return cls(**cls._check(setting, data))

    def matches(
        self,
        exc: BaseException,
        *,
        task_name: str | None = None,
        domain: str | None = None,
        failure_class: str | None = None,
    ) -> bool:
        """True when every given criterion holds for this failure."""
        if self.domain is not None and domain != self.domain:
            return False
        if self.failure_class is not None and failure_class != self.failure_class:
            return False
        if self.task is not None and (task_name is None or not fnmatch.fnmatchcase(task_name, self.task)):
            return False
        if self.exceptions and not self._exception_matches(exc):
            return False
        pattern = self.pattern
        return pattern is None or pattern.search(exception_text(exc, limit=MESSAGE_SCAN_CHARS, fallback="")) is not None

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """``message`` compiled (it is stored compiled; a plain string is only accepted on input)."""
        return self.message if not isinstance(self.message, str) else re.compile(self.message)

    def _exception_matches(self, exc: BaseException) -> bool:
        names: frozenset[str] | None = None
        for spec in self.exceptions:
            if isinstance(spec, str):
                names = qualified_names(type(exc)) if names is None else names
                if spec in names:
                    return True
            elif isinstance(exc, spec):
                return True
        return False


@dataclass(frozen=True)
class Rule:
    """``match`` -> ``action``; ``name`` labels the decision in events, logs and lessons."""

    match: Match
    action: Action
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.match, Match):
            raise ConfigurationError("Rule.match", f"expected a Match, got {self.match!r}")
        object.__setattr__(self, "action", action_from_config("Rule.action", self.action))
        if self.name is not None:
            as_str("Rule.name", self.name)

    @classmethod
    def from_config(cls, setting: str, value: object) -> Rule:
        """Build from ``{"match": {...}, "action": <action>, "name": str}`` (``name`` optional)."""
        data = as_mapping(setting, value)
        reject_unknown(setting, data, _RULE_KEYS)
        for required in ("match", "action"):
            if required not in data:
                raise ConfigurationError(f"{setting}.{required}", "is required ('match': {} matches every failure)")
        name = _optional(f"{setting}.name", data.get("name"), as_str)
        return cls(
            match=Match.from_config(f"{setting}.match", data["match"]),
            action=action_from_config(f"{setting}.action", data["action"]),
            name=setting if name is None else name,
        )


@dataclass(frozen=True)
class Decision:
    """The action for one failure and the rule that chose it (None: no rule matched, so escalate)."""

    rule_name: str | None
    action: Action

    @property
    def matched(self) -> bool:
        """False when no rule matched and the failure escalates as an unknown pattern."""
        return self.rule_name is not None


def parse_rules(setting: str, value: object) -> tuple[Rule, ...]:
    """Parse the ``prismatic_remediation_rules`` list (None: no user rule).

    Each rule is ``{"match": {...}, "action": "dead_letter" | {"action": ..., **params}, "name": ...}``;
    an unnamed rule is named after its position, e.g. ``prismatic_remediation_rules[0]``. Errors
    name the path, e.g. ``prismatic_remediation_rules[0].match.message: invalid regular expression``.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(setting, f"expected a list of rules, got {type(value).__name__} {value!r}")
    rules = tuple(Rule.from_config(f"{setting}[{i}]", item) for i, item in enumerate(value))
    seen: set[str | None] = set()
    for i, rule in enumerate(rules):
        if rule.name in seen:
            raise ConfigurationError(f"{setting}[{i}].name", f"duplicate rule name {rule.name!r}")
        seen.add(rule.name)
    return rules


def parse_overrides(
    value: object, *, setting: str = "prismatic_failure_class_overrides"
) -> dict[type[BaseException] | str, str]:
    """Validate overrides at start-up: keys are exception classes or importable dotted names.

    Raises :class:`~prismatic_celery.errors.ConfigurationError` naming ``setting``. Dotted
    names that cannot be imported here are kept as names (matched by qualified name), so an
    override for an optional dependency does not require installing it.
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, f"expected a mapping of exception class -> failure class, got {value!r}")
    parsed: dict[type[BaseException] | str, str] = {}
    for key, klass in value.items():
        label = f"{setting}[{key!r}]"
        failure_class = as_choice(label, klass, FAILURE_CLASSES)
        if isinstance(key, str):
            if not key.strip():
                raise ConfigurationError(label, "an exception class name must not be empty")
            try:
                parsed[as_class(label, key, BaseException)] = failure_class
            except ConfigurationError:
                parsed[key] = failure_class  # not importable here: matched by its dotted name
        elif isinstance(key, type) and issubclass(key, BaseException):
            parsed[key] = failure_class
        else:
            raise ConfigurationError(label, f"keys must be exception classes or dotted names, got {key!r}")
    return parsed
