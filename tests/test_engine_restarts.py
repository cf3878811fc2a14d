"""A failed execution, the child's failure rate and the restart decision (one script) behave the same on every
store."""

from __future__ import annotations

import random
from typing import Any

import pytest

from prismatic_celery.store import MemoryStore, Store
from prismatic_celery.store.keys import Keys
from prismatic_celery.supervision.hotspots import hotspots, is_hotspot
from prismatic_celery.supervision.pauses import Pause, clear_pauses, read_pauses, rest_cause, set_pause
from prismatic_celery.supervision.restarts import ChildPolicy, RestartOutcome, failure_call, record_failure
from prismatic_celery.supervision.tree import Domain, RestartBudget, Supervisor
from prismatic_celery.supervision.window import EXECUTIONS, ExecutionWindow, executions_key, failed

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
#: Every failure trips (one execution is enough volume): the restart semantics on their own.
EVERY = {"min_executions": 1, "failure_rate": 0.5}


def fail(store: Store, domain: str, queue: str, member: str, *, successes: int = 0, countdown_s: float = -1.0,
         jitter: float = 0.0, pattern_ttl_s: float = 0.0, **overrides: Any) -> RestartOutcome:
    """One failed execution of ``queue`` (default policy: 20 executions, half failed, in 10 s)."""
    d = TREE.domain(domain)
    child = next(c for c in d.child_list if c.queue == queue)
    options: dict[str, Any] = {
        "window_s": 10.0, "min_executions": 20, "failure_rate": 0.5, "hotspot_window_s": 300.0, "pause_s": 30.0,
        "cooldowns_s": [5.0, 10.0, 20.0], "cooldown_reset_s": 600.0, "stream_maxlen": 100,
    }
    options.update(overrides)
    call = failure_call(KEYS, TREE, d, child, member, ChildPolicy(**options), pending_successes=successes,
                        context={"task": "t.x", "task_id": member},
                        message_event={"type": "remediation", "task_id": member, "countdown_s": "0"},
                        countdown_s=countdown_s, jitter=jitter, pattern=KEYS.key("pattern", "fp1"),
                        pattern_ttl_s=pattern_ttl_s, pattern_event={"type": "escalation", "reason": "new"})
    return record_failure(store, call, d)


def flush(store: Store, queue: str, successes: int, window_s: float = 10.0) -> None:
    """What a process's background flush does with its successes."""
    store.run(EXECUTIONS, [executions_key(KEYS, queue)], [window_s, successes])


# -- the child's failure rate ---------------------------------------------------------------------------

def test_a_failure_below_the_minimum_volume_is_a_message_failure_only(store: Store) -> None:
    """19 failures of a quiet child: no restart, no pause, no budget spent."""
    outcomes = [fail(store, "core", "storage", f"m{i}:0") for i in range(19)]
    assert not any(o.tripped for o in outcomes)
    assert outcomes[-1].failures == 19 and outcomes[-1].successes == 0
    assert read_pauses(store, KEYS, TREE, ["cache", "telemetry"]) == {}
    assert store.hgetall(KEYS.key("restart-totals")) == {}


def test_a_child_whose_every_execution_fails_trips_at_the_minimum_volume(store: Store) -> None:
    """The 20th failure in a row is a child failure: restart counted, rest_for_one pauses, window afresh."""
    outcomes = [fail(store, "core", "storage", f"m{i}:0") for i in range(20)]
    assert [o.tripped for o in outcomes] == [False] * 19 + [True]
    assert outcomes[-1].child_restarts == 1 and outcomes[-1].paused == ("cache", "telemetry")
    assert store.hgetall(KEYS.key("restart-totals")) == {"storage": "1"}
    assert store.hgetall(executions_key(KEYS, "storage")) == {}, "a restarted child starts a fresh window"
    assert not fail(store, "core", "storage", "after:0").tripped


def test_successes_keep_a_busy_child_with_a_few_failures_healthy(store: Store) -> None:
    """Flushed successes and the crashing process's own pending successes both count."""
    flush(store, "storage", 500)
    outcomes = [fail(store, "core", "storage", f"m{i}:0") for i in range(25)]
    assert not any(o.tripped for o in outcomes) and outcomes[-1].successes == 500
    pending = fail(store, "core", "cache", "c:0", successes=40)
    assert pending.successes == 40 and pending.failures == 1


def test_a_steady_low_error_rate_never_trips() -> None:
    """Random interleaving of 3,000 executions at 5 % failures, successes flushed in batches: never a restart."""
    rng = random.Random(3)
    now = [1_000.0]
    store = MemoryStore(clock=lambda: now[0])
    pending = 0
    for i in range(3000):
        now[0] += 0.003
        if rng.random() < 0.05:
            assert not fail(store, "core", "storage", f"m{i}:0", successes=rng.randint(0, pending)).tripped
            pending = 0
        else:
            pending += 1
            if pending >= 50:  # another process's flush
                flush(store, "storage", pending)
                pending = 0


def test_old_executions_leave_the_window() -> None:
    """With an injected clock: successes older than the window no longer protect the child."""
    now = [1_000.0]
    store = MemoryStore(clock=lambda: now[0])
    flush(store, "storage", 1000)
    now[0] += 11.0
    outcomes = [fail(store, "core", "storage", f"m{i}:0") for i in range(20)]
    assert outcomes[-1].tripped and outcomes[-1].successes == 0


def test_foreign_data_in_the_window_is_removed_and_reported(store: Store) -> None:
    """A window key holding garbage fields or another type never breaks the decision."""
    key = executions_key(KEYS, "storage")
    store.hset(key, {"nonsense": "x", "12:weird": "3"})
    outcome = fail(store, "core", "storage", "m:0")
    assert outcome.foreign and outcome.failures == 1
    store.delete(key)
    store.set_json(key, "a string")
    assert fail(store, "core", "storage", "n:0").failures == 1


def test_a_flush_only_adds_and_reports_foreign_data(store: Store) -> None:
    """A flush into a key of another type, or onto a bucket that is no integer, replaces it and says so."""
    key = executions_key(KEYS, "storage")
    store.set_json(key, "a string")
    assert store.run(EXECUTIONS, [key], [10.0, 5]) == 1
    assert sum(int(v) for f, v in store.hgetall(key).items() if f.endswith(":ok")) == 5
    assert store.run(EXECUTIONS, [key], [10.0, 7]) == 0
    assert sum(int(v) for f, v in store.hgetall(key).items() if f.endswith(":ok")) == 12


def test_a_flush_deletes_the_buckets_that_left_the_window() -> None:
    """With an injected clock: the first add of a second deletes the buckets older than the window, keeps the
    ones inside it, and the key expires after twice the window without a flush."""
    now = [1_000.5]
    store = MemoryStore(clock=lambda: now[0])
    key = executions_key(KEYS, "storage")
    store.hset(key, {"985:ok": "4", "985:fail": "2", "992:ok": "3", "999:ok": "1"})
    flush(store, "storage", 5)
    assert store.hgetall(key) == {"992:ok": "3", "999:ok": "1", "1000:ok": "5"}
    flush(store, "storage", 2)
    assert store.hgetall(key)["1000:ok"] == "7"
    now[0] += 21.0
    assert store.hgetall(key) == {}


def test_a_flush_without_housekeeping_only_adds(store: Store) -> None:
    """A key whose flag is '0' gets its HINCRBY and nothing else (the buckets that left the window stay); the
    other key of the same call keeps house."""
    quiet, kept = executions_key(KEYS, "storage"), executions_key(KEYS, "cache")
    second = int(store.time()) - 15  # left the 10 s window
    stale = {f"{second}:ok": "4", f"{second}:fail": "2"}
    for key in (quiet, kept):
        store.hset(key, stale)
    store.run(EXECUTIONS, [quiet, kept], [10.0, 3, 5, 0, 1])
    assert {f: v for f, v in store.hgetall(quiet).items() if f in stale} == stale
    assert sum(int(v) for f, v in store.hgetall(quiet).items() if f not in stale) == 3
    assert store.hgetall(kept).keys().isdisjoint(stale)
    assert sum(int(v) for v in store.hgetall(kept).values()) == 5


def test_a_process_keeps_house_at_its_first_flush_then_every_half_window_and_after_an_outage() -> None:
    """ExecutionWindow asks for housekeeping per child: at its first flush of it, then not before half the window
    (the store's bucket of a second that left the window stays until then), and at once after an outage."""
    now = [1_000.5]
    store = MemoryStore(clock=lambda: now[0])
    window = ExecutionWindow(store, KEYS, 10.0, clock=lambda: now[0])
    key = executions_key(KEYS, "storage")

    def flush(stale_second: int) -> bool:
        """Flush one success over a stale bucket; True when the flush deleted it (kept house)."""
        store.hset(key, {f"{stale_second}:ok": "1"})
        window.pending["storage"] += 1
        window.flush()
        return f"{stale_second}:ok" not in store.hgetall(key)

    assert flush(980)
    now[0] += 1.0
    assert not flush(981), "within half the window: only the add"
    now[0] += 4.0
    assert flush(982), "half the window after the last housekeeping"
    now[0] += 1.0
    store.failures += 1
    assert flush(983), "the store had an outage since: the key may have come back without expiry"
    now[0] += 1.0
    assert not flush(984)
    assert sum(int(v) for f, v in store.hgetall(key).items() if f.endswith(":ok") and int(f[:-3]) > 990) == 5


@pytest.mark.parametrize(("successes", "failures", "expected"), [
    (0, 19, False), (0, 20, True), (10, 10, True), (11, 9, False), (980, 20, False), (1, 1, False),
])
def test_the_rule_as_a_pure_function(successes: int, failures: int, expected: bool) -> None:
    """failed(): enough executions, and at least the failure rate of them failed."""
    assert failed(successes, failures, min_executions=20, failure_rate=0.5) is expected


# -- what a child failure does -----------------------------------------------------------------------------

def test_rest_for_one_pauses_only_later_children(store: Store) -> None:
    """A failure of the first child pauses the children declared after it, not itself."""
    outcome = fail(store, "core", "storage", "a:0", **EVERY)
    assert outcome.paused == ("cache", "telemetry")
    assert outcome.child_restarts == 1 and not outcome.budget_exceeded
    pauses = read_pauses(store, KEYS, TREE, ["storage", "cache", "telemetry"])
    assert set(pauses) == {"cache", "telemetry"}
    assert pauses["cache"].reason == "rest_for_one" and pauses["cache"].by == "storage"
    assert 29 < pauses["cache"].until - pauses["cache"].since <= 30.0
    assert fail(store, "core", "telemetry", "b:0", **EVERY).paused == (), "the last child pauses nothing"


def test_one_for_one_pauses_nothing(store: Store) -> None:
    """one_for_one restarts only the failed child."""
    outcome = fail(store, "osint", "sources", "a:0", **EVERY)
    assert outcome.tripped and outcome.paused == () and outcome.recycle_generation == 0
    assert read_pauses(store, KEYS, TREE, ["sources", "monitor"]) == {}


def test_one_for_all_pauses_every_child_and_bumps_the_recycle_generation(store: Store) -> None:
    """one_for_all pauses the whole domain and asks its pool processes to recycle."""
    first = fail(store, "evo", "fitness", "a:0", pause_s=2.0, **EVERY)
    assert first.paused == ("mendel", "fitness") and first.recycle_generation == 1
    second = fail(store, "evo", "mendel", "b:0", pause_s=1.0, **EVERY)
    assert second.recycle_generation == 2
    assert second.paused == (), "a pause that already lasts longer is not shortened"
    third = fail(store, "evo", "mendel", "c:0", pause_s=10.0, **EVERY)
    assert third.paused == ("mendel", "fitness"), "a longer pause extends the current one"


def test_exceeding_the_budget_pauses_the_domain_for_an_escalating_cooldown(store: Store) -> None:
    """The restart after max_restarts pauses every child for the first cool-down."""
    outcomes = [fail(store, "osint", "sources", f"m{i}:0", **EVERY) for i in range(3)]
    assert [o.budget_exceeded for o in outcomes] == [False, False, True]
    third = outcomes[2]
    assert third.paused == ("sources", "monitor") and third.cooldown_attempt == 1 and third.cooldown_s == 5.0
    assert third.supervisor_restarts == 1 and not third.escalated
    pauses = read_pauses(store, KEYS, TREE, ["sources", "monitor"])
    assert {p.reason for p in pauses.values()} == {"cooldown"}
    assert fail(store, "core", "storage", "other:0", **EVERY).domain_restarts == 1, "other domains: own budget"


def test_exceeding_the_supervisor_budget_escalates(store: Store) -> None:
    """The second domain overrun within the supervisor's period escalates and uses the longest cool-down."""
    for i in range(3):
        fail(store, "osint", "sources", f"a{i}:0", **EVERY)
    outcomes = [fail(store, "osint", "sources", f"b{i}:0", **EVERY) for i in range(3)]
    last = outcomes[-1]
    assert last.budget_exceeded and last.escalated and last.supervisor_restarts == 2
    assert last.cooldown_s == 20.0 and last.cooldown_attempt == 2
    assert store.get_json(KEYS.key("escalation", "osint"))["reason"] == "supervisor_budget_exceeded"
    assert read_pauses(store, KEYS, TREE, ["sources"])["sources"].causes == ("escalated", "cooldown")
    types = [fields["type"] for _, fields in store.stream_range(KEYS.key("events"), 100)]
    assert types.count("restart") == 6 and types.count("escalation") == 1 and types.count("pause") == 2


def test_a_rerun_landing_in_a_cooldown_waits_for_its_end_spread_by_jitter(store: Store) -> None:
    """The countdown of a re-run during the domain's cool-down is its end plus up to half of it (at least 1 s)."""
    for i in range(2):
        fail(store, "osint", "sources", f"a{i}:0", **EVERY)
    low = fail(store, "osint", "sources", "low:0", countdown_s=1.0, jitter=0.0, **EVERY)
    assert low.budget_exceeded and low.cooldown_s == 5.0
    assert 4.5 < low.countdown_s <= 5.0
    high = fail(store, "osint", "monitor", "high:0", countdown_s=1.0, jitter=1.0)
    assert not high.tripped and 6.5 < high.countdown_s <= 7.5, "held plus half of it"
    free = fail(store, "core", "storage", "free:0", countdown_s=1.5, jitter=1.0)
    assert free.countdown_s == 1.5, "no cool-down: the backoff as given"


def test_the_message_event_and_a_new_pattern_are_appended_once(store: Store) -> None:
    """The message's own entry carries the final countdown; a pattern's escalation entry is written once."""
    first = fail(store, "core", "storage", "id-1:0", countdown_s=2.0, pattern_ttl_s=60.0)
    second = fail(store, "core", "storage", "id-2:0", countdown_s=2.0, pattern_ttl_s=60.0)
    assert first.new_pattern and not second.new_pattern
    entries = [fields for _, fields in store.stream_range(KEYS.key("events"), 10)]
    assert [e["type"] for e in entries] == ["remediation", "escalation", "remediation"]
    assert entries[0]["countdown_s"] == "2.000" and entries[0]["task_id"] == "id-1:0"


def test_child_events_carry_the_context(store: Store) -> None:
    """The restart and pause entries name the domain, child, task, id and the window's counts."""
    fail(store, "core", "storage", "id-1:0", **EVERY)
    entries = [fields for _, fields in store.stream_range(KEYS.key("events"), 10)]
    restart = next(e for e in entries if e["type"] == "restart")
    assert restart["child"] == "storage" and restart["task_id"] == "id-1:0"
    assert restart["executions"] == "1" and restart["failures"] == "1"
    assert next(e for e in entries if e["type"] == "pause")["reason"] == "rest_for_one"


# -- pause records ----------------------------------------------------------------------------------

def test_pause_records_round_trip_and_clear(store: Store) -> None:
    """set_pause / read_pauses / clear_pauses agree; a corrupt record is skipped."""
    now = store.time()
    set_pause(store, KEYS, Pause("cache", "core", "manual", "operator", now, now + 30))
    store.set_json(KEYS.key("pause", "telemetry", "manual"), {"reason": 5})
    assert set(read_pauses(store, KEYS, TREE, ["cache", "telemetry"])) == {"cache"}
    assert clear_pauses(store, KEYS, TREE, ["cache", "telemetry"]) == 2
    assert read_pauses(store, KEYS, TREE, ["cache"]) == {}


def test_a_recovery_resume_never_removes_a_cooldown(store: Store) -> None:
    """Cool-down and rest_for_one are separate causes: ending the rest_for_one pause leaves the cool-down."""
    now = store.time()
    set_pause(store, KEYS, Pause("telemetry", "core", "cooldown", "storage", now, now + 5))
    set_pause(store, KEYS, Pause("telemetry", "core", "rest_for_one", "storage", now, now + 30))
    view = read_pauses(store, KEYS, TREE, ["telemetry"])["telemetry"]
    assert view.reason == "cooldown" and set(view.causes) == {"cooldown", rest_cause("storage")}
    assert clear_pauses(store, KEYS, TREE, ["telemetry"], causes=[rest_cause("storage")]) == 1
    assert read_pauses(store, KEYS, TREE, ["telemetry"])["telemetry"].reason == "cooldown"


def test_a_pause_never_shortens_a_longer_one_of_its_cause(store: Store) -> None:
    """set_pause keeps the longer record of the same cause; another cause is written beside it."""
    now = store.time()
    assert set_pause(store, KEYS, Pause("cache", "core", "circuit", "api", now, now + 30))
    assert not set_pause(store, KEYS, Pause("cache", "core", "circuit", "api", now, now + 2))
    assert read_pauses(store, KEYS, TREE, ["cache"])["cache"].until == pytest.approx(now + 30)
    assert set_pause(store, KEYS, Pause("cache", "core", "manual", "op", now, now + 2))
    assert read_pauses(store, KEYS, TREE, ["cache"])["cache"].reason == "manual", "the stronger cause is shown"


# -- hotspots -----------------------------------------------------------------------------------------

def _reference(times: list[float], at: float, window: float) -> int:
    return sum(1 for t in times if at - window < t <= at)


@pytest.mark.parametrize("seed", range(5))
def test_hotspots_match_a_reference_over_random_timelines(store: Store, seed: int) -> None:
    """For random restart timelines, hotspot detection equals a count computed here."""
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


def test_the_script_twin_counts_restart_windows_like_the_reference() -> None:
    """On the memory store (injected clock) the script's child restart count follows the sliding window."""
    rng = random.Random(7)
    now = [1_000.0]
    store = MemoryStore(clock=lambda: now[0])
    times: list[float] = []
    for i in range(60):
        now[0] += rng.uniform(0, 40)
        times.append(now[0])
        outcome = fail(store, "core", "cache", f"r{i}:0", hotspot_window_s=120.0, **EVERY)
        assert outcome.child_restarts == _reference(times, now[0], 120.0)
