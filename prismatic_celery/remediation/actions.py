"""The fixed, registered set of remediation actions a rule or a lesson may choose (``remediation/registry.py``).

An action is a frozen dataclass with validated parameters and a stable ``name``. Actions are
chosen by name from :data:`ACTIONS` only: configuration (:func:`action_from_config`) and data
read back from Redis (:func:`action_from_json`) can select a registered action and fill in its
validated parameters, nothing else. Nothing here evaluates, imports or looks up code by a name
found in stored data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from types import MappingProxyType
from typing import ClassVar

from ..errors import ConfigurationError
from ..validate import as_choice, as_int, as_mapping, as_str, reject_unknown

__all__ = [
    "ACTIONS",
    "MAX_DELAY_MS",
    "Action",
    "ActionParams",
    "CircuitBreak",
    "DeadLetter",
    "Escalate",
    "RecycleProcess",
    "RestartChild",
    "RetryWithBackoff",
    "Shed",
    "action_from_config",
    "action_from_json",
]

#: Longest delay or open duration any action accepts (one day): a bound on absurd values and on
#: hostile stored data. Note that a Redis broker redelivers an ETA message whose delay exceeds its
#: ``visibility_timeout`` (one hour by default); keep retry delays below it.
MAX_DELAY_MS = 86_400_000

#: Largest JSON document :func:`action_from_json` will parse.
_MAX_JSON_BYTES = 4096
_MAX_TEXT = 200
_CIRCUIT_NAME_FORBIDDEN = " \t\r\n*?[]"

#: An action's validated parameters by field name: delays in milliseconds, circuit names, reasons.
ActionParams = dict[str, int | str]


@dataclass(frozen=True)
class Action:
    """Base of every action. Subclasses set ``name`` and validate their fields in ``_check``."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self._check(type(self).__name__, self.params())

    @classmethod
    def _check(cls, setting: str, params: Mapping[str, object]) -> ActionParams:
        """Validate ``params`` (every field present) and return them normalised; errors name ``setting.<field>``.

        An action without parameters has nothing to validate."""
        return {name: value for name, value in params.items() if isinstance(value, (int, str))}

    def params(self) -> ActionParams:
        """The parameters, by field name (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def label(self) -> str:
        """The name with the parameter values, e.g. ``retry_with_backoff(1000,30000,1000)``: how lessons tell
        two settings of one action apart."""
        params = self.params()
        return f"{self.name}({','.join(str(v) for v in params.values())})" if params else self.name

    def to_json(self) -> ActionParams:
        """``{"action": name, **params}``: the shape :func:`action_from_json` and the config accept."""
        return {"action": self.name, **self.params()}

    @classmethod
    def from_params(cls, setting: str, params: Mapping[str, object]) -> Action:
        """Build from a parameter mapping: unknown, missing or bad parameters raise ConfigurationError."""
        declared = fields(cls)
        reject_unknown(setting, params, [f.name for f in declared])
        full: dict[str, object] = {}
        for f in declared:
            if f.name in params:
                full[f.name] = params[f.name]
            elif f.default is not MISSING:
                full[f.name] = f.default
            else:
                raise ConfigurationError(f"{setting}.{f.name}", "is required")
        return cls(**cls._check(setting, full))

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


def _delay_ms(setting: str, value: object, *, minimum: int) -> int:
    ms = as_int(setting, value, minimum=minimum)
    if ms > MAX_DELAY_MS:
        raise ConfigurationError(setting, f"must be <= {MAX_DELAY_MS} ms (one day), got {ms}")
    return ms


def _text(setting: str, value: object) -> str:
    text = as_str(setting, value)
    if len(text) > _MAX_TEXT or not text.isprintable():
        raise ConfigurationError(setting, f"must be printable and at most {_MAX_TEXT} characters")
    return text


@dataclass(frozen=True)
class RetryWithBackoff(Action):
    """Re-run the message after an exponential delay (see :mod:`.backoff`).

    Attempt 1 waits ``initial_ms``, each later attempt twice the previous one, capped at
    ``max_ms``; a random jitter in ``[0, jitter_ms]`` is added on top.
    """

    name: ClassVar[str] = "retry_with_backoff"
    initial_ms: int = 1000
    max_ms: int = 30_000
    jitter_ms: int = 1000

    @classmethod
    def _check(cls, setting: str, params: Mapping[str, object]) -> ActionParams:
        initial = _delay_ms(f"{setting}.initial_ms", params["initial_ms"], minimum=1)
        largest = _delay_ms(f"{setting}.max_ms", params["max_ms"], minimum=1)
        if largest < initial:
            raise ConfigurationError(f"{setting}.max_ms", f"must be >= initial_ms ({initial}), got {largest}")
        jitter = _delay_ms(f"{setting}.jitter_ms", params["jitter_ms"], minimum=0)
        return {"initial_ms": initial, "max_ms": largest, "jitter_ms": jitter}


@dataclass(frozen=True)
class CircuitBreak(Action):
    """Open the shared circuit ``target`` for ``duration_ms``, then let it probe half-open."""

    name: ClassVar[str] = "circuit_break"
    target: str
    duration_ms: int = 30_000

    @classmethod
    def _check(cls, setting: str, params: Mapping[str, object]) -> ActionParams:
        target = _text(f"{setting}.target", params["target"])
        if any(c in target for c in _CIRCUIT_NAME_FORBIDDEN):
            raise ConfigurationError(f"{setting}.target", "a circuit name has no whitespace or glob characters")
        duration = _delay_ms(f"{setting}.duration_ms", params["duration_ms"], minimum=1)
        return {"target": target, "duration_ms": duration}


@dataclass(frozen=True)
class RestartChild(Action):
    """Re-run the message under the default backoff (``prismatic_backoff_*``) and count a restart
    against the child's and domain's restart budgets."""

    name: ClassVar[str] = "restart_child"


@dataclass(frozen=True)
class RecycleProcess(Action):
    """Replace the pool process after this task (leaked memory or file descriptors), then re-run it."""

    name: ClassVar[str] = "recycle_process"


@dataclass(frozen=True)
class DeadLetter(Action):
    """Move the message and its failure context to the domain's dead-letter queue."""

    name: ClassVar[str] = "dead_letter"


@dataclass(frozen=True)
class Shed(Action):
    """Drop the message (recorded, not re-run): for work that is worthless once late."""

    name: ClassVar[str] = "shed"


@dataclass(frozen=True)
class Escalate(Action):
    """Stop self-healing and hand the failure to operators (``supervision-escalation`` event)."""

    name: ClassVar[str] = "escalate"
    reason: str = "unknown_failure_pattern"

    @classmethod
    def _check(cls, setting: str, params: Mapping[str, object]) -> ActionParams:
        return {"reason": _text(f"{setting}.reason", params["reason"])}


#: Every action that exists, by name. Read-only: the set is fixed.
ACTIONS: Mapping[str, type[Action]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (RetryWithBackoff, CircuitBreak, RestartChild, RecycleProcess, DeadLetter, Shed, Escalate)
    }
)


def action_from_config(setting: str, value: object) -> Action:
    """An action from configuration: an :class:`Action`, a name, or ``{"action": name, **params}``.

    ``"escalate"``, ``"restart_child"`` or ``{"action": "retry_with_backoff", "initial_ms": 500}``;
    omitted parameters take the action's defaults. An unknown action names ``setting``; a bad,
    missing or unknown parameter names ``setting.<parameter>``.
    """
    if isinstance(value, Action):
        if type(value) not in ACTIONS.values():
            raise ConfigurationError(setting, f"{type(value).__name__} is not a registered action")
        return value
    if isinstance(value, str):
        return ACTIONS[as_choice(setting, value, ACTIONS)].from_params(setting, {})
    data = as_mapping(setting, value)
    if "action" not in data:
        raise ConfigurationError(f"{setting}.action", f"is required; one of {', '.join(ACTIONS)}")
    name = as_choice(setting, data["action"], ACTIONS)
    return ACTIONS[name].from_params(setting, {k: v for k, v in data.items() if k != "action"})


def action_from_json(data: object) -> Action | None:
    """The action stored as ``action.to_json()`` (a mapping, or its JSON text as str or bytes).

    Stored data only selects a registered action and supplies validated parameters. Anything
    else (an unknown name, an extra or mistyped parameter, oversized or malformed JSON) returns
    None; the caller logs a warning and falls back to the rules.
    """
    if isinstance(data, (str, bytes, bytearray)):
        if len(data) > _MAX_JSON_BYTES:
            return None
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            return None
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        return None
    cls = ACTIONS.get(data["action"])
    if cls is None:
        return None
    try:
        return cls.from_params("stored action", {k: v for k, v in data.items() if k != "action"})
    except (ConfigurationError, TypeError):
        return None
