"""Remediation: which fix a failure gets (:class:`~.registry.RemediationRegistry`).

Ordered rules map a failure (exception class, message, task, domain, failure class) to one
action of a fixed, registered set; retry delays come from tenacity's wait strategies; a failure
no rule matches escalates.
"""

from __future__ import annotations

from .actions import (
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
from .backoff import delay_bounds, delay_s, escalating_cooldown_bounds, escalating_cooldown_s, wait_strategy
from .defaults import DATABASE_ERRORS, DEFAULT_RETRY, DEFAULT_RULES, NETWORK_ERRORS, rules_table
from .registry import RemediationRegistry
from .rules import FAILURE_CLASSES, Decision, FailureClass, Match, Rule, parse_rules

__all__ = [
    "ACTIONS",
    "DATABASE_ERRORS",
    "DEFAULT_RETRY",
    "DEFAULT_RULES",
    "FAILURE_CLASSES",
    "NETWORK_ERRORS",
    "Action",
    "CircuitBreak",
    "DeadLetter",
    "Decision",
    "Escalate",
    "FailureClass",
    "Match",
    "RecycleProcess",
    "RemediationRegistry",
    "RestartChild",
    "RetryWithBackoff",
    "Rule",
    "Shed",
    "action_from_config",
    "action_from_json",
    "delay_bounds",
    "delay_s",
    "escalating_cooldown_bounds",
    "escalating_cooldown_s",
    "parse_rules",
    "rules_table",
    "wait_strategy",
]
