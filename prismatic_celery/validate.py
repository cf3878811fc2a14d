"""Small checks shared by every configuration parser; each error names the setting."""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TypeVar

from .errors import ConfigurationError

__all__ = [
    "as_bool",
    "as_choice",
    "as_class",
    "as_int",
    "as_mapping",
    "as_seconds",
    "as_str",
    "as_str_list",
    "reject_unknown",
]

E = TypeVar("E")


def _type_name(value: object) -> str:
    return type(value).__name__


def as_bool(setting: str, value: object) -> bool:
    """Accept a real bool only: ``"false"`` silently meaning True is a classic trap."""
    if not isinstance(value, bool):
        raise ConfigurationError(setting, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def as_int(setting: str, value: object, *, minimum: int | None = None) -> int:
    """An integer (not a bool), optionally at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(setting, f"expected an integer, got {_type_name(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigurationError(setting, f"must be >= {minimum}, got {value}")
    return value


def as_seconds(setting: str, value: object, *, allow_zero: bool = False) -> float:
    """A duration in seconds: int, float or ``datetime.timedelta``; finite and positive."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            setting, f"expected a number of seconds or a timedelta, got {_type_name(value)} {value!r}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(setting, f"must be a finite duration {bound}, got {value!r}")
    return seconds


def as_str(setting: str, value: object, *, allow_empty: bool = False) -> str:
    """A string, non-empty unless ``allow_empty``."""
    if not isinstance(value, str):
        raise ConfigurationError(setting, f"expected a string, got {_type_name(value)} {value!r}")
    if not value.strip() and not allow_empty:
        raise ConfigurationError(setting, "must not be empty")
    return value


def as_str_list(setting: str, value: object) -> tuple[str, ...]:
    """A list or tuple of non-empty strings (a single string is a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(setting, f"expected a list of strings, got {_type_name(value)} {value!r}")
    return tuple(as_str(f"{setting}[{i}]", item) for i, item in enumerate(value))


def as_choice(setting: str, value: object, choices: Iterable[str]) -> str:
    """One of ``choices``; the error lists them and suggests the closest."""
    allowed = list(choices)
    if not isinstance(value, str) or value not in allowed:
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(setting, f"{value!r} is not allowed{hint}; allowed: {', '.join(allowed)}")
    return value


def as_mapping(setting: str, value: object) -> Mapping[str, object]:
    """A mapping with string keys."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, f"expected a mapping, got {_type_name(value)} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigurationError(setting, f"keys must be strings, got {_type_name(key)} {key!r}")
    return value


def _shared_prefix(names: Sequence[str]) -> str:
    """The leading characters every name shares (none for fewer than two names)."""
    if len(names) < 2:
        return ""
    first, last = min(names), max(names)
    size = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last)))
    return first[:size]


def reject_unknown(setting: str, given: Iterable[str], allowed: Sequence[str]) -> None:
    """Fail on the first key not in ``allowed``, naming the close matches only (never the whole list)."""
    shared = _shared_prefix(allowed)  # "prismatic_" makes every setting resemble every other
    for key in given:
        if key not in allowed:
            names = {name[len(shared):]: name for name in allowed}
            found = difflib.get_close_matches(key[len(shared):] if key.startswith(shared) else key, list(names), n=3)
            close = [names[name] for name in found]
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no known setting is close"
            raise ConfigurationError(f"{setting}.{key}" if setting else key, f"unknown setting ({hint})")


def as_class(setting: str, value: object, base: type[E]) -> type[E]:
    """A class deriving from ``base``, given as the class itself or a dotted path."""
    if isinstance(value, str):
        module_name, _, attr = value.rpartition(".")
        if not module_name:
            builtins = importlib.import_module("builtins")
            found = getattr(builtins, value, None)
        else:
            try:
                found = getattr(importlib.import_module(module_name), attr, None)
            except ImportError as exc:
                raise ConfigurationError(setting, f"cannot import {value!r}: {exc}") from exc
        if found is None:
            raise ConfigurationError(setting, f"{value!r} does not name a class")
        value = found
    if not isinstance(value, type) or not issubclass(value, base):
        raise ConfigurationError(setting, f"{value!r} is not a subclass of {base.__name__}")
    return value
