"""Retry delays and cool-downs come from tenacity's wait strategies and stay within their bounds."""

from __future__ import annotations

import random

import pytest
import tenacity

from prismatic_celery.remediation import (
    RetryWithBackoff,
    delay_bounds,
    delay_s,
    escalating_cooldown_bounds,
    escalating_cooldown_s,
    wait_strategy,
)
from prismatic_celery.remediation.backoff import wait_jitter

DEFAULT = RetryWithBackoff(initial_ms=1000, max_ms=30_000, jitter_ms=1000)


def test_bounds_double_from_initial_and_cap_at_max_with_jitter_on_top() -> None:
    expected = [(1, 2), (2, 3), (4, 5), (8, 9), (16, 17), (30, 31), (30, 31), (30, 31), (30, 31), (30, 31)]
    assert [delay_bounds(DEFAULT, attempt) for attempt in range(1, 11)] == expected


@pytest.mark.parametrize("seed", range(20))
def test_delays_for_attempts_1_to_10_stay_within_bounds(seed: int) -> None:
    rng = random.Random(seed)
    for attempt in range(1, 11):
        low, high = delay_bounds(DEFAULT, attempt)
        assert low <= delay_s(DEFAULT, attempt, rng=rng) <= high


def test_the_same_seed_gives_the_same_schedule_and_jitter_varies_between_draws() -> None:
    first = [delay_s(DEFAULT, a, rng=random.Random(7)) for a in range(1, 11)]
    again = [delay_s(DEFAULT, a, rng=random.Random(7)) for a in range(1, 11)]
    assert first == again
    rng = random.Random(7)
    draws = {delay_s(DEFAULT, 1, rng=rng) for _ in range(50)}
    assert len(draws) == 50


def test_without_jitter_the_delay_is_exactly_the_exponential_schedule() -> None:
    action = RetryWithBackoff(initial_ms=200, max_ms=1000, jitter_ms=0)
    assert [delay_s(action, a) for a in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_huge_attempt_number_is_capped_without_overflow() -> None:
    assert delay_bounds(DEFAULT, 10**6) == (30.0, 31.0)


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0])
def test_attempts_start_at_one(attempt: object) -> None:
    with pytest.raises(ValueError, match="attempt"):
        delay_s(DEFAULT, attempt)  # type: ignore[arg-type]


def test_the_strategy_is_tenacity_exponential_plus_tenacity_random() -> None:
    strategy = wait_strategy(DEFAULT)
    assert isinstance(strategy, tenacity.wait.wait_combine)
    parts = strategy.wait_funcs
    assert isinstance(parts[0], tenacity.wait_exponential)
    assert isinstance(parts[1], tenacity.wait_random)
    assert (parts[0].multiplier, parts[0].max) == (1.0, 30.0)
    assert (parts[1].wait_random_min, parts[1].wait_random_max) == (0, 1.0)


def test_delays_are_computed_by_tenacity(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def fake_exponential(self: tenacity.wait_exponential, retry_state: tenacity.RetryCallState) -> float:
        seen.append(retry_state.attempt_number)
        return 123.0

    monkeypatch.setattr(tenacity.wait_exponential, "__call__", fake_exponential)
    assert delay_s(RetryWithBackoff(jitter_ms=0), 4) == 123.0
    assert seen == [4]


def test_without_an_rng_the_jitter_is_tenacitys_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tenacity.wait.random.random", lambda: 0.5)
    assert delay_s(DEFAULT, 3) == 4.5


def test_wait_jitter_composes_like_any_tenacity_strategy() -> None:
    rng = random.Random(1)
    combined = tenacity.wait_fixed(2) + wait_jitter(1.0, rng)
    retrying = tenacity.Retrying(wait=combined)
    state = tenacity.RetryCallState(retrying, None, (), {})
    assert 2.0 <= combined(state) <= 3.0


def test_cooldowns_grow_exponentially_and_stop_at_the_maximum() -> None:
    lows = [escalating_cooldown_bounds(5.0, 300.0, a)[0] for a in range(1, 10)]
    assert lows == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert escalating_cooldown_bounds(5.0, 300.0, 1) == (5.0, 10.0)
    assert escalating_cooldown_bounds(5.0, 300.0, 6) == (160.0, 165.0)
    assert escalating_cooldown_bounds(5.0, 300.0, 6, jitter_s=0.5) == (160.0, 160.5)


@pytest.mark.parametrize("seed", range(10))
def test_cooldowns_stay_within_bounds_and_never_exceed_the_maximum(seed: int) -> None:
    rng = random.Random(seed)
    for attempt in range(1, 12):
        low, high = escalating_cooldown_bounds(5.0, 300.0, attempt)
        cooldown = escalating_cooldown_s(5.0, 300.0, attempt, rng)
        assert low <= cooldown <= high <= 300.0


@pytest.mark.parametrize(
    ("initial_s", "max_s", "jitter_s"),
    [(0.0, 10.0, None), (10.0, 5.0, None), (1.0, 5.0, -1.0), (float("nan"), 5.0, None)],
)
def test_cooldown_arguments_are_checked(initial_s: float, max_s: float, jitter_s: float | None) -> None:
    with pytest.raises(ValueError):
        escalating_cooldown_s(initial_s, max_s, 1, jitter_s=jitter_s)


def test_cooldown_strategies_are_built_once_per_parameters() -> None:
    """A crash evaluates the cached strategy; the jitter is still drawn on every call."""
    from prismatic_celery.remediation import backoff

    rng = random.Random(3)
    escalating_cooldown_s(7.0, 70.0, 1, rng)
    built = backoff._cooldown_strategy.cache_info().currsize
    draws = {escalating_cooldown_s(7.0, 70.0, 1, rng) for _ in range(20)}
    assert backoff._cooldown_strategy.cache_info().currsize == built
    assert len(draws) > 1 and all(7.0 <= d <= 14.0 for d in draws)
