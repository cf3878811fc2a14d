"""The restart decision (one script, one round trip) behaves the same on every store."""

from __future__ import annotations

import random
from typing import Any

import pytest

from prismatic_celery.engine.hotspots import hotspots, is_hotspot
from prismatic_celery.engine.pauses import Pause, clear_pauses, read_pauses, set_pause
from prismatic_celery.engine.restarts import RestartOutcome, record_restart
from prismatic_celery.keys import Keys
from prismatic_celery.store import MemoryStore, Store
from prismatic_celery.tree import Domain, RestartBudget, Supervisor

KEYS = Keys("eng")
TREE = Supervisor(
    domains=[
        Domain("core", strategy="rest_for_one", children=["storage", "cache", "telemetry"],
               budget=RestartBudget(3, 60)),
        Domain("evo", strategy="one_for_all", children=["mendel", "fitness"]),
        Domain("osint", children=["sources", "monitor"], budget=RestartBudget(2, 60)),
    ],
    budget=RestartBudget(1, 300),
)


def restart(store: Store, domain: str, queue: str, member: str, **overrides: Any) -> RestartOutcome:
    d = TREE.domain(domain)
    child = next(c for c in d.child_list if c.queue == queue)
    options: dict[str, Any] = {
        "hotspot_window_s": 300.0, "pause_s": 30.0, "cooldowns_s": [5.0, 10.0, 20.0], "cooldown_reset_s": 600.0,
        "context": {"task": "t.x", "task_id": member}, "stream_maxlen": 100,
    }
    options.update(overrides)
    return record_restart(store, KEYS, TREE, d, child, member, **options)


def test_rest_for_one_pauses_only_later_children(store: Store) -> None:
    """A crash of the first child pauses the children declared after it, not itself."""
    outcome = restart(store, "core", "storage", "a:0")
    assert outcome.paused == ("cache", "telemetry")
    assert outcome.child_restarts == 1 and not outcome.budget_exceeded
    pauses = read_pauses(store, KEYS, ["storage", "cache", "telemetry"])
    assert set(pauses) == {"cache", "telemetry"}
    assert pauses["cache"].reason == "rest_for_one" and pauses["cache"].by == "storage"
    assert 29 < pauses["cache"].until - pauses["cache"].since <= 30.0
    later = restart(store, "core", "telemetry", "b:0")
    assert later.paused == (), "the last child pauses nothing"


def test_one_for_one_pauses_nothing(store: Store) -> None:
    """one_for_one restarts only the crashed child."""
    outcome = restart(store, "osint", "sources", "a:0")
    assert outcome.paused == () and outcome.recycle_generation == 0
    assert read_pauses(store, KEYS, ["sources", "monitor"]) == {}


def test_one_for_all_pauses_every_child_and_bumps_the_recycle_generation(store: Store) -> None:
    """one_for_all pauses the whole domain and asks its pool processes to recycle."""
    first = restart(store, "evo", "fitness", "a:0", pause_s=2.0)
    assert first.paused == ("mendel", "fitness") and first.recycle_generation == 1
    second = restart(store, "evo", "mendel", "b:0", pause_s=1.0)
    assert second.recycle_generation == 2
    assert second.paused == (), "a pause that already lasts longer is not shortened"
    third = restart(store, "evo", "mendel", "c:0", pause_s=10.0)
    assert third.paused == ("mendel", "fitness"), "a longer pause extends the current one"


def test_exceeding_the_budget_pauses_the_domain_for_an_escalating_cooldown(store: Store) -> None:
    """The restart after max_restarts pauses every child for the first cool-down; the next overrun waits longer."""
    outcomes = [restart(store, "osint", "sources", f"m{i}:0") for i in range(3)]
    assert [o.budget_exceeded for o in outcomes] == [False, False, True]
    third = outcomes[2]
    assert third.paused == ("sources", "monitor") and third.cooldown_attempt == 1 and third.cooldown_s == 5.0
    assert third.supervisor_restarts == 1 and not third.escalated
    pauses = read_pauses(store, KEYS, ["sources", "monitor"])
    assert {p.reason for p in pauses.values()} == {"cooldown"}
    assert restart(store, "core", "storage", "other:0").domain_restarts == 1, "other domains keep their own budget"


def test_exceeding_the_supervisor_budget_escalates(store: Store) -> None:
    """The second domain overrun within the supervisor's period escalates and uses the longest cool-down."""
    for i in range(3):
        restart(store, "osint", "sources", f"a{i}:0")
    outcomes = [restart(store, "osint", "sources", f"b{i}:0") for i in range(3)]
    last = outcomes[-1]
    assert last.budget_exceeded and last.escalated and last.supervisor_restarts == 2
    assert last.cooldown_s == 20.0 and last.cooldown_attempt == 2
    assert store.get_json(KEYS.key("escalation", "osint"))["reason"] == "supervisor_budget_exceeded"
    types = [fields["type"] for _, fields in store.stream_range(KEYS.key("events"), 100)]
    assert types.count("restart") == 6 and types.count("escalation") == 1 and types.count("pause") == 2


def test_events_carry_the_context(store: Store) -> None:
    """The stream entries written by the script name the domain, child, task and id."""
    restart(store, "core", "storage", "id-1:0")
    entries = [fields for _, fields in store.stream_range(KEYS.key("events"), 10)]
    assert entries[0]["type"] == "restart" and entries[0]["child"] == "storage" and entries[0]["task_id"] == "id-1:0"
    assert entries[1]["type"] == "pause" and entries[1]["reason"] == "rest_for_one"


def test_pause_records_round_trip_and_clear(store: Store) -> None:
    """set_pause / read_pauses / clear_pauses agree; a corrupt record is skipped."""
    now = store.time()
    set_pause(store, KEYS, Pause("cache", "core", "manual", "operator", now, now + 30))
    store.set_json(KEYS.key("pause", "telemetry"), {"reason": 5})
    assert set(read_pauses(store, KEYS, ["cache", "telemetry"])) == {"cache"}
    assert clear_pauses(store, KEYS, ["cache", "telemetry"]) == 2
    assert read_pauses(store, KEYS, ["cache"]) == {}


def _reference(times: list[float], at: float, window: float) -> int:
    return sum(1 for t in times if at - window < t <= at)


@pytest.mark.parametrize("seed", range(5))
def test_hotspots_match_a_reference_over_random_timelines(store: Store, seed: int) -> None:
    """For random failure timelines, hotspot detection equals a count computed here."""
    rng = random.Random(seed)
    window, threshold = 300.0, 3
    base = 1_700_000_000.0
    timelines = {q: sorted(base + rng.uniform(0, 1200) for _ in range(rng.randint(0, 12)))
                 for q in TREE.queues}
    for queue, times in timelines.items():
        for i, t in enumerate(times):
            count = store.window_add(KEYS.key("restarts", queue), f"{queue}:{i}", t, window, cap=1000)
            assert count == _reference(times[: i + 1], t, window)
    for probe in (base + 1200, base + 1350, base + 1500):  # probes after the last failure of every timeline
        expected = {q for q, times in timelines.items() if is_hotspot(_reference(times, probe, window), threshold)}
        found = {h.child for h in hotspots(store, KEYS, TREE, threshold=threshold, window_s=window, now=probe)}
        assert found == expected, probe


def test_the_script_twin_counts_windows_like_the_reference() -> None:
    """On the memory store (injected clock) the restart script's child count follows the sliding window."""
    rng = random.Random(7)
    now = [1_000.0]
    store = MemoryStore(clock=lambda: now[0])
    times: list[float] = []
    for i in range(60):
        now[0] += rng.uniform(0, 40)
        times.append(now[0])
        outcome = restart(store, "core", "cache", f"r{i}:0", hotspot_window_s=120.0)
        assert outcome.child_restarts == _reference(times, now[0], 120.0)
