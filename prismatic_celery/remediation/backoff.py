"""Delays of :class:`~.actions.RetryWithBackoff` and domain cool-downs, from tenacity's wait strategies.

Delays are pure functions of the attempt number (1 = the first re-run) and a random source:
pass a seeded :class:`random.Random` as ``rng`` to make them reproducible; without one, tenacity's
own (module-level) randomness is used. The ``*_bounds`` functions give the smallest and largest
possible delay of an attempt, so callers and tests can check a measured ETA against them.

Strategies are built once per parameters and random source (:data:`_CACHE_SIZE` of each kind are
kept): a crash only evaluates one. They are stateless, so sharing them between threads is safe;
the jitter is still drawn afresh on every call, from ``rng`` or tenacity's own randomness.
"""

from __future__ import annotations

import functools
import random

import tenacity
from tenacity.wait import wait_base

from .actions import RetryWithBackoff

__all__ = [
    "delay_bounds",
    "delay_s",
    "escalating_cooldown_bounds",
    "escalating_cooldown_s",
    "wait_capped",
    "wait_jitter",
    "wait_strategy",
]

# Built once: tenacity's RetryCallState wants its Retrying object, which the strategies never read.
_RETRYING = tenacity.Retrying()
#: How many strategies of each kind are kept (one per setting and random source in a worker).
_CACHE_SIZE = 64


class wait_jitter(tenacity.wait_random):
    """tenacity's ``wait_random(0, max_s)`` drawing from ``rng`` when one is given."""

    def __init__(self, max_s: float, rng: random.Random | None = None) -> None:
        super().__init__(0, max_s)
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        if self.rng is None:
            return super().__call__(retry_state)
        return self.wait_random_min + self.rng.random() * (self.wait_random_max - self.wait_random_min)


class wait_capped(wait_base):
    """Clamp another strategy's wait to ``[0, max_s]``."""

    def __init__(self, strategy: wait_base, max_s: float) -> None:
        self.strategy = strategy
        self.max_s = max_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return max(0.0, min(self.strategy(retry_state), self.max_s))


def _state(attempt: int) -> tenacity.RetryCallState:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
    state = tenacity.RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = attempt
    return state


def _exponential(action: RetryWithBackoff) -> tenacity.wait_exponential:
    return tenacity.wait_exponential(multiplier=action.initial_ms / 1000, max=action.max_ms / 1000)


def wait_strategy(action: RetryWithBackoff, *, rng: random.Random | None = None) -> wait_base:
    """The tenacity strategy of ``action``: ``wait_exponential(initial, max) + wait_random(0, jitter)``.

    Built once per ``(action, rng)``: actions are frozen and the strategy holds no state.
    """
    return _wait_strategy(action, rng)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _wait_strategy(action: RetryWithBackoff, rng: random.Random | None) -> wait_base:
    return _exponential(action) + wait_jitter(action.jitter_ms / 1000, rng)


def delay_s(action: RetryWithBackoff, attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before re-run number ``attempt`` (>= 1).

    ``min(initial_ms * 2**(attempt - 1), max_ms) + uniform(0, jitter_ms)``, in seconds: the
    exponential part is capped at ``max_ms`` and the jitter comes on top of it.
    """
    return float(wait_strategy(action, rng=rng)(_state(attempt)))


def delay_bounds(action: RetryWithBackoff, attempt: int) -> tuple[float, float]:
    """The smallest and largest :func:`delay_s` of ``attempt``, in seconds."""
    base = float(_exponential(action)(_state(attempt)))
    return base, base + action.jitter_ms / 1000


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cooldown_strategy(initial_s: float, max_s: float, jitter_s: float | None, rng: random.Random | None) -> wait_base:
    """The cool-down strategy of these parameters, built once (a bad argument raises every time: never cached)."""
    if not (initial_s > 0 and max_s >= initial_s):
        raise ValueError(f"need 0 < initial_s <= max_s, got initial_s={initial_s!r}, max_s={max_s!r}")
    jitter = initial_s if jitter_s is None else jitter_s
    if not jitter >= 0:
        raise ValueError(f"jitter_s must be >= 0, got {jitter_s!r}")
    return wait_capped(tenacity.wait_exponential(multiplier=initial_s) + wait_jitter(jitter, rng), max_s)


def escalating_cooldown_s(
    initial_s: float,
    max_s: float,
    attempt: int,
    rng: random.Random | None = None,
    *,
    jitter_s: float | None = None,
) -> float:
    """Cool-down of a domain's ``attempt``-th budget overrun, in seconds.

    ``min(initial_s * 2**(attempt - 1) + uniform(0, jitter_s), max_s)``: tenacity's
    ``wait_exponential_jitter`` formula (the cap applies to the total, so the longest cool-down is
    exactly ``max_s``). ``jitter_s`` defaults to ``initial_s``, the ratio of tenacity's defaults.
    """
    return float(_cooldown_strategy(initial_s, max_s, jitter_s, rng)(_state(attempt)))


def escalating_cooldown_bounds(
    initial_s: float, max_s: float, attempt: int, *, jitter_s: float | None = None
) -> tuple[float, float]:
    """The smallest and largest :func:`escalating_cooldown_s` of ``attempt``, in seconds."""
    state = _state(attempt)
    low = float(_cooldown_strategy(initial_s, max_s, 0.0, None)(state))
    high = float(_cooldown_strategy(initial_s, max_s, jitter_s, _HIGHEST)(state))
    return low, high


class _Highest(random.Random):
    """A random source whose every draw is the top of its range (for the upper bound)."""

    def random(self) -> float:
        return 1.0


_HIGHEST = _Highest()
