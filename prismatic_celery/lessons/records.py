"""The JSON records of a lesson: :class:`Lesson` and its :class:`RemediationStats`, validated field by field.

A lesson is one JSON document per fingerprint in the store (``lessons/store.py``); the Lua script
``lessons/scripts/lesson.lua`` and its Python twin (``lessons/script.py``) write the same shape:
:class:`LessonJSON`. Corrupt documents (bad JSON, wrong types, missing fields) raise ValueError
here, naming the first bad field; the store skips them with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from .classify import FAILURE_CLASSES

__all__ = ["MAX_INT", "MAX_TIME", "Lesson", "LessonJSON", "RemediationStats", "RemediationStatsJSON"]

#: Largest count a lesson holds (a JSON number stays exact below it).
MAX_INT = 2**53
#: Largest time, in seconds since the epoch, a lesson holds.
MAX_TIME = 1e15


class RemediationStatsJSON(TypedDict):
    """:meth:`RemediationStats.to_json`: the outcomes of one remediation as stored."""

    consecutive_failures: int
    failed: int
    last_failed: float
    recovery_ms: int
    succeeded: int
    tried: int


class LessonJSON(TypedDict):
    """:meth:`Lesson.to_json`: a lesson as stored, exported and imported (version 2)."""

    count: int
    domains: list[str]
    exc_type: str
    failure_class: str
    fingerprint: str
    first_seen: float
    last_seen: float
    message: str
    remediations: dict[str, RemediationStatsJSON]
    root_cause: str
    taught: str
    tasks: list[str]
    version: int


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < MAX_INT:
        raise ValueError(f"{name} out of range: {value!r}")
    return int(value)


def _check_time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not -MAX_TIME < value < MAX_TIME:
        raise ValueError(f"{name} out of range: {value!r}")
    return float(value)


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _check_strings(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class RemediationStats:
    """How one remediation fared on a lesson's crashes, one outcome per attempt.

    ``recovery_ms`` sums the time from each successful attempt's crash to the re-run's success;
    ``last_failed`` is when it last failed (seconds since the epoch, 0 never).
    """

    tried: int = 0
    succeeded: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    recovery_ms: int = 0
    last_failed: float = 0.0

    @property
    def observations(self) -> int:
        """Outcomes recorded (succeeded + failed)."""
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        """Fraction of outcomes that succeeded; None before any outcome."""
        return self.succeeded / self.observations if self.observations else None

    @property
    def mean_recovery_s(self) -> float | None:
        """Mean seconds from a crash to the success of the re-run this remediation gave it; None before one."""
        return self.recovery_ms / self.succeeded / 1000.0 if self.succeeded else None

    @property
    def rank(self) -> tuple[float, float]:
        """Sort key putting the better remediation first: the highest recovery rate, then the fastest recovery."""
        return (-(self.success_rate or 0.0), self.mean_recovery_s or 0.0)

    def qualifies(self, *, min_observations: int, min_success_rate: float, max_consecutive_failures: int) -> bool:
        """At least ``min_observations`` outcomes, a success rate of at least ``min_success_rate`` and fewer than
        ``max_consecutive_failures`` failures in a row."""
        rate = self.success_rate
        return (rate is not None and self.observations >= min_observations and rate >= min_success_rate
                and self.consecutive_failures < max_consecutive_failures)

    def to_json(self) -> RemediationStatsJSON:
        """JSON-ready dict."""
        return {"consecutive_failures": self.consecutive_failures, "failed": self.failed,
                "last_failed": round(self.last_failed, 3), "recovery_ms": self.recovery_ms,
                "succeeded": self.succeeded, "tried": self.tried}

    @classmethod
    def from_json(cls, data: object, *, name: str = "stats") -> RemediationStats:
        """Validate and build; ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"{name} must be an object")
        return cls(
            tried=_check_int(f"{name}.tried", data.get("tried")),
            succeeded=_check_int(f"{name}.succeeded", data.get("succeeded")),
            failed=_check_int(f"{name}.failed", data.get("failed")),
            consecutive_failures=_check_int(f"{name}.consecutive_failures", data.get("consecutive_failures", 0)),
            recovery_ms=_check_int(f"{name}.recovery_ms", data.get("recovery_ms", 0)),
            last_failed=_check_time(f"{name}.last_failed", data.get("last_failed", 0)),
        )


@dataclass(frozen=True)
class Lesson:
    """What the cluster learned about one fingerprint.

    ``message`` is the normalized, redacted message; ``root_cause`` names the innermost in-app
    frame (``module:function``), the exception type and the latest redacted message. Times are
    seconds since the epoch (store clock), kept to the millisecond. ``tasks`` and ``domains``
    are bounded sets, most recent last. ``remediations`` holds the outcomes per remediation
    label (:attr:`~prismatic_celery.remediation.actions.Action.label`); ``taught`` is the action
    an operator pinned (its JSON, ``""`` when none). Version 1 documents (without ``taught``,
    ``recovery_ms`` and ``last_failed``) are read with those as empty.
    """

    fingerprint: str
    failure_class: str
    exc_type: str
    message: str
    root_cause: str
    first_seen: float
    last_seen: float
    count: int
    tasks: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    remediations: Mapping[str, RemediationStats] = field(default_factory=dict, hash=False)
    taught: str = ""

    def to_json(self) -> LessonJSON:
        """JSON-ready dict, the same document the store holds."""
        return {
            "count": self.count,
            "domains": list(self.domains),
            "exc_type": self.exc_type,
            "failure_class": self.failure_class,
            "fingerprint": self.fingerprint,
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "message": self.message,
            "remediations": {name: stats.to_json() for name, stats in sorted(self.remediations.items())},
            "root_cause": self.root_cause,
            "taught": self.taught,
            "tasks": list(self.tasks),
            "version": 2,
        }

    @classmethod
    def from_json(cls, data: object) -> Lesson:
        """Validate every field's type; ValueError naming the first bad one. Unknown fields are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a lesson must be an object, got {type(data).__name__}")
        failure_class = _check_str("failure_class", data.get("failure_class"))
        if failure_class not in FAILURE_CLASSES:
            raise ValueError(f"failure_class {failure_class!r} is not one of {', '.join(FAILURE_CLASSES)}")
        remediations = data.get("remediations")
        if not isinstance(remediations, dict):
            raise ValueError("remediations must be an object")
        stats: dict[str, RemediationStats] = {}
        for name, value in remediations.items():
            stats[_check_str("remediation name", name)] = RemediationStats.from_json(value, name=f"remediations.{name}")
        return cls(
            fingerprint=_check_str("fingerprint", data.get("fingerprint")),
            failure_class=failure_class,
            exc_type=_check_str("exc_type", data.get("exc_type")),
            message=_check_str("message", data.get("message")),
            root_cause=_check_str("root_cause", data.get("root_cause")),
            first_seen=_check_time("first_seen", data.get("first_seen")),
            last_seen=_check_time("last_seen", data.get("last_seen")),
            count=_check_int("count", data.get("count")),
            tasks=_check_strings("tasks", data.get("tasks")),
            domains=_check_strings("domains", data.get("domains")),
            remediations=stats,
            taught=_check_str("taught", data.get("taught", "")),
        )
