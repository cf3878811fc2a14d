"""Remediation rules: which action a failure gets (DESIGN.md section 1, RemediationRegistry).

A :class:`Rule` pairs a :class:`Match` with an :class:`~.actions.Action`. The
:class:`RemediationRegistry` holds user rules followed by :data:`~.defaults.DEFAULT_RULES`;
the first rule whose every criterion holds decides, and a failure no rule matches escalates
(``Escalate("unknown_failure_pattern")``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, get_args

from ..describe import exception_text
from ..errors import ConfigurationError
from ..log import get_logger
from ..validate import as_choice, as_mapping, as_str, reject_unknown
from .actions import Action, Escalate, action_from_config

__all__ = [
    "FAILURE_CLASSES",
    "Decision",
    "FailureClass",
    "Match",
    "RemediationRegistry",
    "Rule",
    "parse_rules",
    "qualified_names",
]

#: The failure classes of LessonsLearned's classifier.
FailureClass = Literal["state_corruption", "external_dependency", "resource_exhaustion", "logic_error"]
FAILURE_CLASSES: tuple[str, ...] = get_args(FailureClass)

#: Only the start of a message is searched, bounding the cost of a regex on a huge message.
MESSAGE_SCAN_CHARS = 4096

_MATCH_KEYS = ("exceptions", "message", "task", "domain", "failure_class")
_RULE_KEYS = ("match", "action", "name")
UNKNOWN = Escalate("unknown_failure_pattern")

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


def _exceptions(setting: str, value: Any) -> tuple[ExceptionSpec, ...]:
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


def _message(setting: str, value: Any) -> re.Pattern[str] | None:
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


def _optional(setting: str, value: Any, check: Callable[[str, Any], T]) -> T | None:
    return None if value is None else check(setting, value)


def _domain(setting: str, value: Any) -> str:
    name = as_str(setting, value)
    if ":" in name:
        raise ConfigurationError(setting, "a domain name never contains ':', so this rule could never match")
    return name


def _failure_class(setting: str, value: Any) -> str:
    return as_choice(setting, value, FAILURE_CLASSES)


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
    def _check(setting: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "exceptions": _exceptions(f"{setting}.exceptions", data.get("exceptions", ())),
            "message": _message(f"{setting}.message", data.get("message")),
            "task": _optional(f"{setting}.task", data.get("task"), as_str),
            "domain": _optional(f"{setting}.domain", data.get("domain"), _domain),
            "failure_class": _optional(f"{setting}.failure_class", data.get("failure_class"), _failure_class),
        }

    @classmethod
    def from_config(cls, setting: str, value: Any) -> Match:
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
    def from_config(cls, setting: str, value: Any) -> Rule:
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


def parse_rules(setting: str, value: Any) -> tuple[Rule, ...]:
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


class RemediationRegistry:
    """Ordered rules, first match wins: the user's rules, then ``defaults``.

    ``defaults`` None means :data:`~.defaults.DEFAULT_RULES`; pass ``()`` for none. Rules added
    later (:meth:`add`, :meth:`rule`) go after the existing user rules and before the defaults.
    Unnamed rules are named ``rules[<position>]``. Lookups never raise.
    """

    def __init__(self, rules: Iterable[Rule] = (), *, defaults: Iterable[Rule] | None = None) -> None:
        if defaults is None:
            from .defaults import DEFAULT_RULES  # defaults.py builds its rules with this module

            defaults = DEFAULT_RULES
        self._user: tuple[Rule, ...] = ()
        self._defaults: tuple[Rule, ...] = ()
        for rule in defaults:
            self._defaults = (*self._defaults, self._named(rule, f"defaults[{len(self._defaults)}]"))
        for rule in rules:
            self.add(rule)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule in the order they are tried."""
        return (*self._user, *self._defaults)

    def __len__(self) -> int:
        return len(self._user) + len(self._defaults)

    def _named(self, rule: Rule, fallback: str) -> Rule:
        if not isinstance(rule, Rule):
            raise ConfigurationError("RemediationRegistry", f"expected a Rule, got {rule!r}")
        named = rule if rule.name is not None else replace(rule, name=fallback)
        if any(r.name == named.name for r in self.rules):
            raise ConfigurationError("RemediationRegistry", f"duplicate rule name {named.name!r}")
        return named

    def add(self, rule: Rule) -> Rule:
        """Append ``rule`` after the user rules (before the defaults); returns it, named."""
        named = self._named(rule, f"rules[{len(self._user)}]")
        self._user = (*self._user, named)  # one reference swap: concurrent lookups see old or new
        return named

    def rule(
        self,
        action: Action | str | Mapping[str, Any],
        *,
        exceptions: Iterable[ExceptionSpec] | ExceptionSpec = (),
        message: str | re.Pattern[str] | None = None,
        task: str | None = None,
        domain: str | None = None,
        failure_class: str | None = None,
        name: str | None = None,
    ) -> Callable[[T], T]:
        """Decorator registering a rule when applied, returning the decorated object unchanged.

        On an exception class, the class joins ``exceptions``::

            @registry.rule("dead_letter")
            class InvalidInvoice(ValueError): ...

        On anything else (a function documenting the rule, say) the criteria are used as given
        and the rule is named after the object's qualified name unless ``name`` is given.
        """
        chosen = action_from_config("registry.rule(action)", action)
        listed = [exceptions] if isinstance(exceptions, (str, type)) else list(exceptions)
        criteria = Match(exceptions=tuple(listed), message=message, task=task, domain=domain,
                         failure_class=failure_class)  # validated now, not when the decorator is applied

        def register(obj: T) -> T:
            match = criteria
            if isinstance(obj, type) and issubclass(obj, BaseException):
                match = replace(criteria, exceptions=(*criteria.exceptions, obj))
            label = name if name is not None else getattr(obj, "__qualname__", None)
            self.add(Rule(match=match, action=chosen, name=label if isinstance(label, str) else None))
            return obj

        return register

    def lookup(
        self,
        exc: BaseException,
        *,
        task_name: str | None,
        domain: str | None,
        failure_class: str | None = None,
    ) -> Decision:
        """The first matching rule's action, else ``Escalate("unknown_failure_pattern")``."""
        for rule in self.rules:
            try:
                hit = rule.match.matches(exc, task_name=task_name, domain=domain, failure_class=failure_class)
            except Exception:  # e.g. a raising __subclasscheck__: skip the rule, keep remediating
                _log.warning("remediation rule %r failed to evaluate; skipped", rule.name, exc_info=True)
                continue
            if hit:
                return Decision(rule.name, rule.action)
        return Decision(None, UNKNOWN)
