"""Knowledge metrics equal the counts the tests make themselves, on every backend."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from prismatic_celery.lessons import (
    KnowledgeMetrics,
    LessonStore,
    MetricsRecorder,
    classify,
    fingerprint_exception,
)
from prismatic_celery.store import MemoryStore, RedisStore, Store
from prismatic_celery.store.keys import Keys


@pytest.fixture
def recorder(store: Store, namespace: str) -> Iterator[MetricsRecorder]:
    """A recorder; on Redis backends, proves afterwards that nothing fell back to memory."""
    yield MetricsRecorder(store, Keys(namespace))
    if isinstance(store, RedisStore):
        assert not store.degraded
        assert store.fallback.scan("*") == [], "an operation was answered by the in-memory fallback"


def raw(store: Store, key: str) -> str | None:
    if isinstance(store, RedisStore):
        value = store.client.get(key)
        return None if value is None else str(value)
    assert isinstance(store, MemoryStore)
    found = store.raw(key)
    return None if found is None else str(found)


def test_an_empty_snapshot_has_zero_counts_and_no_rates(recorder: MetricsRecorder) -> None:
    """Nothing observed yet: counts are 0 and every rate is None, not a made-up 0%."""
    snapshot = recorder.snapshot()
    assert snapshot == KnowledgeMetrics()
    data = snapshot.to_json()
    assert data["auto_remediated_pct"] is None and data["mean_time_to_recovery_s"] is None
    assert data["escalation_rate"] is None and data["false_positive_rate"] is None


def test_metrics_of_a_scripted_story_equal_the_hand_counted_values(recorder: MetricsRecorder) -> None:
    """Seven tasks with known fates; every metric is checked against numbers counted by hand, per attempt."""
    m = recorder
    # t1: unknown crash, remediated, recovers after 3 s (not auto: the pattern was unknown)
    m.crash("t1", False, 100.0)
    assert m.remediated("t1", "retry_with_backoff") is False
    assert m.succeeded("t1", 103.0, applied_at=100.0, known=False, action="retry_with_backoff") == 3.0
    # t2: known crash, remediated, its re-run succeeds 1.5 s later (auto)
    m.crash("t2", True, 200.0)
    assert m.remediated("t2", "retry_with_backoff") is True
    assert m.succeeded("t2", 201.5, applied_at=200.0, known=True, action="retry_with_backoff") == 1.5
    # t3: two known crashes, two remediations, fails for good: 2 false positives
    m.crash("t3", True, 300.0)
    m.remediated("t3", "recycle_process")
    assert m.crash("t3", True, 302.0) == 2
    m.remediated("t3", "recycle_process")
    assert m.failed_for_good("t3") == 2
    # t4: known crash, escalated, fails for good without a remediation
    m.crash("t4", True, 400.0)
    m.escalated("t4")
    assert m.failed_for_good("t4") == 0
    # t5: unknown crash, escalated, still pending
    m.crash("t5", False, 500.0)
    m.escalated("t5")
    # t6: never crashed
    assert m.succeeded("t6", 600.0) is None
    # t7: known crash + retry that fails again (not auto-remediated), then a known crash + recycle
    #     whose re-run succeeds 0.5 s later (auto); the message recovers 10 s after its first crash
    m.crash("t7", True, 700.0)
    m.remediated("t7", "retry_with_backoff")
    m.crash("t7", True, 709.5)
    m.remediated("t7", "recycle_process")
    assert m.succeeded("t7", 710.0, applied_at=709.5, known=True, action="recycle_process") == 10.0

    s = m.snapshot()
    assert (s.crashes, s.known_pattern_crashes, s.remediations_applied) == (8, 6, 6)
    assert s.remediations_by_action == {"retry_with_backoff": 3, "recycle_process": 3}
    assert s.recoveries_by_action == {"retry_with_backoff": 2, "recycle_process": 1}
    assert s.recovery_rate_by_action == {"recycle_process": pytest.approx(1 / 3),
                                         "retry_with_backoff": pytest.approx(2 / 3)}
    assert (s.auto_remediated, s.auto_remediated_pct) == (2, pytest.approx(100 * 2 / 6))
    assert s.mean_time_to_recovery_s == pytest.approx((1.5 + 0.5) / 2)
    assert (s.recoveries, s.task_recovery_s) == (3, pytest.approx(14.5 / 3))
    assert s.attempts_per_recovery == pytest.approx(4 / 3)
    assert (s.escalations, s.escalation_rate) == (2, 0.25)
    assert (s.failed_for_good, s.false_positives, s.false_positive_rate) == (2, 2, pytest.approx(2 / 6))
    assert s.total_lessons == 0


def test_counters_are_a_hash_an_operator_can_read(recorder: MetricsRecorder, store: Store) -> None:
    """prismatic:{<ns>}:knowledge holds plain integer fields (redis-cli HGETALL)."""
    recorder.crash("t1", True, 10.0)
    recorder.remediated("t1", "shed")
    recorder.escalated("t1")
    key = Keys(recorder.keys.namespace).key("knowledge")
    assert recorder.counters_key == key
    assert store.hgetall(key) == {"crashes": "1", "known_pattern_crashes": "1", "remediations_applied": "1",
                                  "action:shed": "1", "escalations": "1"}


def test_a_crashed_task_has_a_small_expiring_recovery_record(recorder: MetricsRecorder, store: Store) -> None:
    """The first crash time lives in prismatic:{<ns>}:recovery:<task_id> for a day, and goes on success."""
    recorder.crash("task-1", True, 1000.5)
    recorder.crash("task-1", False, 1003.0)
    key = Keys(recorder.keys.namespace).key("recovery", "task-1")
    record = json.loads(raw(store, key) or "null")
    assert record == {"auto": 0, "crashes": 2, "first_crash": 1000.5, "known": 1, "last_known": 0, "remediations": 0}
    ttl = store.ttl(key)
    assert ttl is not None and 86_000 < ttl <= 86_400
    assert recorder.succeeded("task-1", 1010.5) == 10.0
    assert raw(store, key) is None


def test_success_of_a_task_that_never_crashed_changes_nothing(recorder: MetricsRecorder, store: Store) -> None:
    """succeeded() on a clean task answers None and writes no key and no counter."""
    assert recorder.succeeded("clean-task") is None
    assert store.hgetall(recorder.counters_key) == {}
    assert raw(store, recorder.recovery_key("clean-task")) is None


def test_recovery_uses_the_store_clock_by_default(recorder: MetricsRecorder, store: Store) -> None:
    """Without ``when`` both ends are stamped by the store's clock (Redis TIME), so hosts' clocks do not matter."""
    recorder.crash("t", False)
    duration = recorder.succeeded("t")
    assert duration is not None and 0 <= duration < 5


def test_an_expired_recovery_record_is_not_a_recovery(namespace: str) -> None:
    """After the record's TTL a late success is not counted (no made-up recovery time)."""
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    recorder = MetricsRecorder(store, Keys(namespace), recovery_ttl_s=60)
    recorder.crash("t", True, 1000.0)
    now[0] = 1061.0
    assert recorder.succeeded("t", 1061.0) is None
    assert recorder.snapshot().recoveries == 0


def test_a_corrupt_recovery_record_is_ignored_with_a_warning(
    recorder: MetricsRecorder, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad JSON or wrong types in a recovery record: no recovery counted, a warning, no exception."""
    caplog.set_level(logging.WARNING)
    key = recorder.recovery_key("t")
    if isinstance(store, RedisStore):
        store.client.set(key, '{"first_crash": "yesterday"}')
    else:
        assert isinstance(store, MemoryStore)
        store.set_raw(key, "{oops")
    assert recorder.succeeded("t", 10.0) is None
    assert "knowledge-corrupt-record" in caplog.text
    assert recorder.snapshot().recoveries == 0


def test_a_corrupt_counter_is_skipped_with_a_warning(
    recorder: MetricsRecorder, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-integer counter field is ignored; the others are still reported."""
    caplog.set_level(logging.WARNING)
    recorder.crash("t", False, 1.0)
    store.hset(recorder.counters_key, {"escalations": "lots"})
    snapshot = recorder.snapshot()
    assert snapshot.crashes == 1 and snapshot.escalations == 0
    assert "knowledge-corrupt-counter" in caplog.text


# Given a mix of real faults, run twice, the second pass applies what the first one learned ----------
def fetch_feed(i: int) -> None:
    raise ConnectionResetError(f"connection reset by 10.0.0.{i}")


def resize_image(i: int) -> None:
    raise MemoryError(f"cannot allocate {i * 1024} bytes")


def sync_ledger(i: int) -> None:
    raise RuntimeError(f"upstream returned 503 Service Unavailable for batch {i}")


def parse_row(i: int) -> None:
    int(f"x{i}")


FAULTS: dict[str, Callable[[int], None]] = {
    "fetch": fetch_feed, "resize": resize_image, "sync": sync_ledger, "parse": parse_row,
}
#: What the default rules try, in order, per failure class ("escalate" ends the story).
DEFAULT_RULES = {
    "external_dependency": ["retry_with_backoff"],
    "resource_exhaustion": ["retry_with_backoff", "recycle_process"],
    "logic_error": ["escalate"],
}
#: Which remediation really cures each fault (sync never recovers: its remediation is a false positive).
CURES = {"fetch": {"retry_with_backoff"}, "resize": {"recycle_process"}, "sync": set(), "parse": set()}


@dataclass
class Tally:
    """What the test itself counts while it plays the engine."""

    crashes: int = 0
    known: int = 0
    remediations: int = 0
    auto: int = 0
    recoveries: int = 0
    recovery_s: float = 0.0
    auto_recovery_s: float = 0.0
    escalations: int = 0
    failed_for_good: int = 0
    false_positives: int = 0
    learned_applied: int = 0
    by_action: dict[str, int] = field(default_factory=dict)


def run_task(task_id: str, fault: str, i: int, start: float, lessons: LessonStore, metrics: MetricsRecorder,
             tally: Tally) -> None:
    """One task's story as the engine would drive it: crash, record, pick a remediation, outcome."""
    now, tried, first = start, 0, start
    while True:
        try:
            FAULTS[fault](i)
        except Exception as exc:
            fp = fingerprint_exception(exc)
            failure_class = classify(exc)
            known = lessons.get(fp.hash) is not None
            metrics.crash(task_id, known, now)
            lessons.record_crash(fp, task=f"app.{fault}", domain="core", failure_class=failure_class,
                                 exc_type=fp.exc_type, message=str(exc), when=now)
            tally.crashes += 1
            tally.known += known
        learned = lessons.best_remediation(fp.hash) if known else None
        rules = DEFAULT_RULES[failure_class]
        action = learned or (rules[tried] if tried < len(rules) else None)
        tried += 1
        if action == "escalate":
            metrics.escalated(task_id)
            tally.escalations += 1
            action = None
        if action is None:
            metrics.failed_for_good(task_id)
            tally.failed_for_good += 1
            return
        tally.learned_applied += learned is not None
        metrics.remediated(task_id, action)
        tally.remediations += 1
        tally.by_action[action] = tally.by_action.get(action, 0) + 1
        cured = action in CURES[fault]
        crashed_at = now
        now += 2.0
        lessons.record_outcome(fp.hash, action, cured, recovery_s=now - crashed_at if cured else None, when=now)
        if cured:
            metrics.succeeded(task_id, now, applied_at=crashed_at, known=known, action=action)
            tally.recoveries += 1
            tally.recovery_s += now - first
            tally.auto += known  # per attempt: this known crash's re-run succeeded
            tally.auto_recovery_s += (now - crashed_at) if known else 0.0
            return
        if fault == "sync":  # its one retry is all it gets: dead-lettered, the remediation was a false positive
            metrics.failed_for_good(task_id)
            tally.failed_for_good += 1
            tally.false_positives += 1
            return


def test_a_fault_mix_run_twice_is_auto_remediated_the_second_time(store: Store, namespace: str) -> None:
    """Given four faults x3 tasks, when the mix runs twice, then the second pass applies learned remediations
    (resize goes straight to recycle_process) and every metric equals the test's own tally."""
    lessons = LessonStore(store, Keys(namespace))
    metrics = MetricsRecorder(store, Keys(namespace))
    first, second = Tally(), Tally()
    clock = 10_000.0
    for tally, label in [(first, "p1"), (second, "p2")]:
        for fault in FAULTS:
            for i in range(3):
                run_task(f"{label}-{fault}-{i}", fault, i, clock, lessons, metrics, tally)
                clock += 100.0

    assert first.learned_applied == 0  # pass 1: lessons not yet trusted (min 3 observations)
    assert second.learned_applied == 6  # pass 2: fetch and resize use what worked
    assert (first.crashes, second.crashes) == (15, 12)  # pass 2: resize no longer wastes a retry
    assert first.by_action == {"retry_with_backoff": 9, "recycle_process": 3}
    assert second.by_action == {"retry_with_backoff": 6, "recycle_process": 3}

    total = Tally(**{name: getattr(first, name) + getattr(second, name)
                     for name in Tally.__dataclass_fields__ if name != "by_action"})
    for tally in (first, second):
        for action, n in tally.by_action.items():
            total.by_action[action] = total.by_action.get(action, 0) + n
    s = metrics.snapshot()
    assert s.total_lessons == 4 == lessons.count()
    assert s.crashes == total.crashes
    assert s.known_pattern_crashes == total.known
    assert s.remediations_applied == total.remediations
    assert s.remediations_by_action == total.by_action
    assert s.auto_remediated == total.auto
    assert s.auto_remediated_pct == pytest.approx(100.0 * total.auto / total.known)
    assert s.recoveries == total.recoveries
    assert s.mean_time_to_recovery_s == pytest.approx(total.auto_recovery_s / total.auto)
    assert s.task_recovery_s == pytest.approx(total.recovery_s / total.recoveries)
    assert s.escalations == total.escalations
    assert s.escalation_rate == pytest.approx(total.escalations / total.crashes)
    assert s.failed_for_good == total.failed_for_good
    assert s.false_positives == total.false_positives
    assert s.false_positive_rate == pytest.approx(total.false_positives / total.remediations)

    sync = next(lesson for lesson in lessons.all() if lesson.tasks == ("app.sync",))
    assert sync.failure_class == "external_dependency"
    assert lessons.best_remediation(sync.fingerprint) is None  # a remediation that never works is never applied
    assert sync.remediations["retry_with_backoff"].failed == 6
