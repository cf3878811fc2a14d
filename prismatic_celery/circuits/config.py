"""Declared circuit breakers: :class:`CircuitSpec` and the ``prismatic_circuits`` setting parser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from celery.exceptions import Ignore, Reject, Retry

from ..errors import ConfigurationError
from ..validate import as_bool, as_class, as_int, as_mapping, as_seconds, as_str_list, reject_unknown

__all__ = ["DEFAULT_EXCLUDE", "CircuitSpec", "Exclusion", "SpecView", "parse_circuit", "parse_circuits"]

#: An exception class, or a predicate over the exception, that is not a failure of the dependency.
Exclusion = type[BaseException] | Callable[[BaseException], bool]

#: Celery's control-flow exceptions: a task asking to be retried, ignored or rejected says
#: nothing about the health of the dependency (they count as a success, as pybreaker does).
DEFAULT_EXCLUDE: tuple[Exclusion, ...] = (Retry, Ignore, Reject)

class SpecView(TypedDict):
    """:meth:`CircuitSpec.describe`: the limits, JSON-ready (exclusions by qualified name)."""

    fail_max: int
    reset_timeout_s: float
    success_threshold: int
    call_timeout_s: float
    strict: bool
    exclude: list[str]


_KEYS = ("fail_max", "reset_timeout_s", "exclude", "success_threshold", "call_timeout_s", "strict")


@dataclass(frozen=True)
class CircuitSpec:
    """How one breaker behaves; units are in the names.

    ``fail_max``: consecutive failures (cluster-wide) that open the circuit.
    ``reset_timeout_s``: how long it stays open before one trial call may run (half-open).
    ``exclude``: exceptions that are not failures; :data:`DEFAULT_EXCLUDE` is always included.
    ``success_threshold``: successful trial calls (one at a time) needed to close it again.
    ``call_timeout_s``: lease of a trial (or strict permit): if its holder dies or overruns,
    another caller may try after this; set it above the protected call's own timeout.
    ``strict``: admit a call only while failures plus calls in flight stay below ``fail_max``,
    cluster-wide, so no more than ``fail_max`` calls can fail before it opens, whatever the
    concurrency (one extra round trip per call, and callers beyond that budget are told the circuit
    is open). Without it, calls already in flight when the circuit opens still reach the dependency.
    """

    fail_max: int = 5
    reset_timeout_s: float = 30.0
    exclude: tuple[Exclusion, ...] = field(default=DEFAULT_EXCLUDE)
    success_threshold: int = 1
    call_timeout_s: float = 30.0
    strict: bool = False

    def __post_init__(self) -> None:
        if self.fail_max < 1:
            raise ValueError(f"fail_max must be >= 1, got {self.fail_max}")
        if self.success_threshold < 1:
            raise ValueError(f"success_threshold must be >= 1, got {self.success_threshold}")
        if not self.reset_timeout_s > 0 or not self.call_timeout_s > 0:
            raise ValueError("reset_timeout_s and call_timeout_s must be > 0")
        missing = tuple(e for e in DEFAULT_EXCLUDE if e not in self.exclude)
        if missing:
            object.__setattr__(self, "exclude", (*missing, *self.exclude))

    @property
    def reset_timeout_ms(self) -> int:
        """``reset_timeout_s`` in whole milliseconds (at least 1)."""
        return max(1, round(self.reset_timeout_s * 1000))

    @property
    def call_timeout_ms(self) -> int:
        """``call_timeout_s`` in whole milliseconds (at least 1)."""
        return max(1, round(self.call_timeout_s * 1000))

    def describe(self) -> SpecView:
        """JSON-ready view (exclusions by qualified name)."""
        return {
            "fail_max": self.fail_max,
            "reset_timeout_s": self.reset_timeout_s,
            "success_threshold": self.success_threshold,
            "call_timeout_s": self.call_timeout_s,
            "strict": self.strict,
            "exclude": [_qualname(e) for e in self.exclude],
        }


def _qualname(exclusion: Exclusion) -> str:
    module = getattr(exclusion, "__module__", "")
    name = getattr(exclusion, "__qualname__", repr(exclusion))
    return f"{module}.{name}" if module else str(name)


def parse_circuit(setting: str, value: object) -> CircuitSpec:
    """One breaker's mapping; missing keys take the :class:`CircuitSpec` defaults."""
    data = as_mapping(setting, value)
    reject_unknown(setting, data, _KEYS)
    defaults = CircuitSpec()
    fail_max = as_int(f"{setting}.fail_max", data.get("fail_max", defaults.fail_max), minimum=1)
    reset_s = as_seconds(f"{setting}.reset_timeout_s", data.get("reset_timeout_s", defaults.reset_timeout_s))
    threshold = as_int(
        f"{setting}.success_threshold", data.get("success_threshold", defaults.success_threshold), minimum=1
    )
    call_s = as_seconds(f"{setting}.call_timeout_s", data.get("call_timeout_s", defaults.call_timeout_s))
    strict = as_bool(f"{setting}.strict", data.get("strict", defaults.strict))
    names = as_str_list(f"{setting}.exclude", data.get("exclude", ()))
    exclude = tuple(as_class(f"{setting}.exclude[{i}]", name, BaseException) for i, name in enumerate(names))
    return CircuitSpec(
        fail_max=fail_max, reset_timeout_s=reset_s, exclude=(*DEFAULT_EXCLUDE, *exclude),
        success_threshold=threshold, call_timeout_s=call_s, strict=strict,
    )


def parse_circuits(setting: str, value: object) -> dict[str, CircuitSpec]:
    """Parse ``{"payments": {"fail_max": 5, "reset_timeout_s": 30, "exclude": ["myapp.errors.NotFound"]}}``.

    ``None`` means no declared circuit. Errors name the setting down to the key, e.g.
    ``prismatic_circuits.payments.fail_max: must be >= 1, got 0``.
    """
    if value is None:
        return {}
    data = as_mapping(setting, value)
    specs: dict[str, CircuitSpec] = {}
    for name, body in data.items():
        if not name or any(c in name for c in " \t\r\n*?[]"):
            raise ConfigurationError(
                f"{setting}.{name}", "a circuit name must be non-empty, without whitespace or glob characters"
            )
        specs[name] = parse_circuit(f"{setting}.{name}", {} if body is None else body)
    return specs
