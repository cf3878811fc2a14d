"""The remediation registry: ordered rules, first match wins; the user's rules, then the defaults.

It lives apart from the rules (``remediation/rules.py``) so that the default rules
(``remediation/defaults.py``), built with those, are imported here without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from ..errors import ConfigurationError
from ..log import get_logger
from .actions import Action, Escalate, action_from_config
from .defaults import DEFAULT_RULES
from .rules import Decision, ExceptionSpec, Match, Rule

__all__ = ["UNKNOWN", "RemediationRegistry"]

#: The action of a failure no rule matches.
UNKNOWN = Escalate("unknown_failure_pattern")

_log = get_logger("remediation")

T = TypeVar("T")


class RemediationRegistry:
    """Ordered rules, first match wins: the user's rules, then ``defaults``.

    ``defaults`` None means :data:`~.defaults.DEFAULT_RULES`; pass ``()`` for none. Rules added
    later (:meth:`add`, :meth:`rule`) go after the existing user rules and before the defaults.
    Unnamed rules are named ``rules[<position>]``. Lookups never raise.
    """

    def __init__(self, rules: Iterable[Rule] = (), *, defaults: Iterable[Rule] | None = None) -> None:
        if defaults is None:
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
        action: Action | str | Mapping[str, object],
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
