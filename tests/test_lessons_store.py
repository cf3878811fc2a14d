"""LessonStore on every backend: the memory twin, fakeredis (Lua via lupa) and a real Redis."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from prismatic_celery.lessons import Fingerprint, Lesson, LessonStore, fingerprint_exception
from prismatic_celery.store import MemoryStore, RedisStore, Store
from prismatic_celery.store.keys import Keys
from tests.conftest import free_port

FP = "a" * 40


def raw(store: Store, key: str) -> Any:
    """What an operator's redis-cli GET shows (the memory twin's stored object otherwise)."""
    if isinstance(store, RedisStore):
        return store.client.get(key)
    assert isinstance(store, MemoryStore)
    return store.raw(key)


def put_raw(store: Store, key: str, value: str) -> None:
    """Write a value behind the store's back, as a buggy tool or an operator might."""
    if isinstance(store, RedisStore):
        store.client.set(key, value)
    else:
        assert isinstance(store, MemoryStore)
        store.set_raw(key, value)


@pytest.fixture
def lessons(store: Store, namespace: str) -> Iterator[LessonStore]:
    """A LessonStore; on Redis backends, proves afterwards that nothing fell back to memory."""
    yield LessonStore(store, Keys(namespace))
    if isinstance(store, RedisStore):
        assert not store.degraded
        assert store.fallback.scan("*") == [], "an operation was answered by the in-memory fallback"


def charge_card(card: str) -> None:
    raise ValueError(f"card {card} declined: password=hunter2 token=tok_live_8f7e6d5c4b3a")


def crash(card: str = "4242") -> tuple[Fingerprint, str]:
    try:
        charge_card(card)
    except ValueError as exc:
        return fingerprint_exception(exc), str(exc)
    raise AssertionError("no crash")


def record(lessons: LessonStore, fp: str = FP, *, when: float = 1000.0, task: str = "app.tasks.t", **kw: Any) -> Lesson:
    args: dict[str, Any] = {"domain": "core", "failure_class": "logic_error", "exc_type": "ValueError",
                            "message": "bad thing", **kw}
    return lessons.record_crash(fp, task=task, when=when, **args)


def test_a_crash_creates_a_lesson_and_the_next_one_counts(lessons: LessonStore) -> None:
    """The first crash creates the lesson, the second increments it and widens last_seen."""
    fp, message = crash("4242")
    first = lessons.record_crash(fp, task="app.tasks.charge", domain="billing", failure_class="logic_error",
                                 exc_type=fp.exc_type, message=message, when=1000.25)
    assert (first.count, first.first_seen, first.last_seen) == (1, 1000.25, 1000.25)
    fp2, message2 = crash("9999")
    assert fp2.hash == fp.hash
    second = lessons.record_crash(fp2, task="app.tasks.refund", domain="billing", failure_class="logic_error",
                                  exc_type=fp2.exc_type, message=message2, when=1001.5)
    assert second.count == 2 and second.first_seen == 1000.25 and second.last_seen == 1001.5
    assert second.tasks == ("app.tasks.charge", "app.tasks.refund") and second.domains == ("billing",)
    assert second.message == "card <n> declined: password=*** token=***"
    assert second.root_cause == (
        "tests.test_lessons_store:charge_card raised ValueError: card 9999 declined: password=*** token=***"
    )
    assert second.remediations == {}
    assert lessons.get(fp.hash) == second


def test_the_lesson_is_plain_json_an_operator_can_read(lessons: LessonStore, store: Store) -> None:
    """The value at prismatic:{<ns>}:lesson:<fp> is JSON equal to Lesson.to_json(); the index is scored by last_seen."""
    lesson = record(lessons, when=1234.5)
    key = Keys(lessons.keys.namespace).key("lesson", FP)
    assert lessons.key(FP) == key
    assert json.loads(raw(store, key)) == lesson.to_json()
    if isinstance(store, RedisStore):
        assert store.client.zrange(Keys(lessons.keys.namespace).key("lessons"), 0, -1, withscores=True) == [
            (FP, 1234.5)]


def test_secrets_are_redacted_before_anything_is_stored(lessons: LessonStore, store: Store) -> None:
    """Neither the stored message nor the root cause holds a secret: the raw stored value proves it."""
    secrets = ["hunter2", "s3cr3t", "AKIAIOSFODNN7EXAMPLE", "tok_live_8f7e6d5c4b3a"]
    message = ("sync to redis://app:s3cr3t@cache:6379/0 failed: password=hunter2 "
               "key AKIAIOSFODNN7EXAMPLE token=tok_live_8f7e6d5c4b3a")
    record(lessons, message=message, task="app.tasks.sync")
    stored = raw(store, lessons.key(FP))
    assert isinstance(stored, str) and "redis://app:***@cache" in stored  # the root cause keeps the redacted URL
    for secret in secrets:
        assert secret not in stored
    assert "password=***" in stored


def test_messages_are_bounded(store: Store, namespace: str) -> None:
    """message_limit bounds the stored message and the message part of the root cause."""
    lessons = LessonStore(store, Keys(namespace), message_limit=100)
    lesson = record(lessons, message="word " * 5000, exc_type="E" * 1000)
    assert len(lesson.message) <= 100
    assert len(lesson.exc_type) == 200
    assert len(lesson.root_cause) <= 100 + 200 + 2
    assert len(raw(store, lessons.key(FP))) < 1000


def test_task_and_domain_sets_are_bounded_most_recent_last(store: Store, namespace: str) -> None:
    """Only the max_items most recently seen task names are kept; a repeat moves to the end."""
    lessons = LessonStore(store, Keys(namespace), max_items=3)
    for name in ["a", "b", "c", "d", "b"]:
        lesson = record(lessons, task=name)
    assert lesson.tasks == ("c", "d", "b")
    assert lesson.count == 5


def test_eviction_keeps_max_lessons_dropping_the_least_recently_seen(store: Store, namespace: str) -> None:
    """Beyond max_lessons the oldest last_seen lessons are deleted, with their index entries."""
    lessons = LessonStore(store, Keys(namespace), max_lessons=3)
    for i in range(6):
        record(lessons, f"fp{i}", when=1000.0 + i)
    assert lessons.count() == 3
    assert [lesson.fingerprint for lesson in lessons.all()] == ["fp5", "fp4", "fp3"]
    for gone in ["fp0", "fp1", "fp2"]:
        assert lessons.get(gone) is None
        assert raw(store, lessons.key(gone)) is None


def test_a_lesson_seen_again_survives_eviction(store: Store, namespace: str) -> None:
    """Eviction is by last_seen: a lesson recorded again becomes the most recent."""
    lessons = LessonStore(store, Keys(namespace), max_lessons=3)
    for i, fp in enumerate(["a1", "b2", "c3"]):
        record(lessons, fp, when=1000.0 + i)
    record(lessons, "a1", when=1010.0)
    record(lessons, "d4", when=1011.0)
    assert {lesson.fingerprint for lesson in lessons.all()} == {"a1", "c3", "d4"}
    assert lessons.get("b2") is None


CORRUPT = {
    "bad JSON": "{not json",
    "not an object": "[1, 2, 3]",
    "count of the wrong type": json.dumps({
        "fingerprint": FP, "failure_class": "logic_error", "exc_type": "E", "message": "m", "root_cause": "r",
        "first_seen": 1, "last_seen": 1, "count": "many", "tasks": [], "domains": [], "remediations": {}}),
    "tasks not a list of strings": json.dumps({
        "fingerprint": FP, "failure_class": "logic_error", "exc_type": "E", "message": "m", "root_cause": "r",
        "first_seen": 1, "last_seen": 1, "count": 1, "tasks": [1, 2], "domains": [], "remediations": {}}),
    "remediation counts of the wrong type": json.dumps({
        "fingerprint": FP, "failure_class": "logic_error", "exc_type": "E", "message": "m", "root_cause": "r",
        "first_seen": 1, "last_seen": 1, "count": 1, "tasks": [], "domains": [],
        "remediations": {"retry": {"tried": "1", "succeeded": 1, "failed": 0}}}),
    "unknown failure class": json.dumps({
        "fingerprint": FP, "failure_class": "gremlins", "exc_type": "E", "message": "m", "root_cause": "r",
        "first_seen": 1, "last_seen": 1, "count": 1, "tasks": [], "domains": [], "remediations": {}}),
    "missing fields": json.dumps({"fingerprint": FP, "count": 3}),
    "another fingerprint": json.dumps({
        "fingerprint": "b" * 40, "failure_class": "logic_error", "exc_type": "E", "message": "m", "root_cause": "r",
        "first_seen": 1, "last_seen": 1, "count": 1, "tasks": [], "domains": [], "remediations": {}}),
}


@pytest.mark.parametrize("value", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_corrupted_lesson_is_skipped_with_a_warning(
    lessons: LessonStore, store: Store, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads answer None and warn; an outcome is not recorded; a new crash replaces the lesson."""
    caplog.set_level(logging.WARNING)
    put_raw(store, lessons.key(FP), value)
    assert lessons.get(FP) is None
    assert "corrupt" in caplog.text
    assert lessons.best_remediation(FP) is None
    caplog.clear()
    assert lessons.record_outcome(FP, "retry", True) is None
    assert "lesson-corrupt" in caplog.text
    assert raw(store, lessons.key(FP)) == value  # an outcome never overwrites what it cannot read
    caplog.clear()
    lesson = record(lessons, when=2000.0)
    assert "lesson-corrupt" in caplog.text
    assert lesson.count == 1 and lesson.first_seen == 2000.0
    assert lessons.get(FP) == lesson


def test_corrupted_lessons_are_skipped_by_all_and_export(
    lessons: LessonStore, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """One bad lesson does not hide the good ones."""
    caplog.set_level(logging.WARNING)
    record(lessons, "good1", when=1.0)
    record(lessons, "bad", when=2.0)
    record(lessons, "good2", when=3.0)
    put_raw(store, lessons.key("bad"), '{"fingerprint": "bad", "count": "x"}')
    assert [lesson.fingerprint for lesson in lessons.all()] == ["good2", "good1"]
    assert [entry["fingerprint"] for entry in lessons.export()] == ["good2", "good1"]
    assert "lesson-corrupt" in caplog.text


def test_a_lesson_key_holding_another_type_is_replaced_by_the_next_crash(lessons: LessonStore, store: Store) -> None:
    """A hash where a lesson should be (WRONGTYPE for GET) reads as None; the next crash overwrites it."""
    if isinstance(store, RedisStore):
        store.client.hset(lessons.key(FP), mapping={"count": "3"})
    else:
        assert isinstance(store, MemoryStore)
        store.hset(lessons.key(FP), {"count": "3"})
    assert lessons.get(FP) is None
    lesson = record(lessons)
    assert lesson.count == 1
    assert lessons.get(FP) == lesson
    if isinstance(store, RedisStore):
        store.fallback.delete(*store.fallback.scan("*"))  # the refused GET was answered from memory


def test_best_remediation_needs_enough_observations_and_a_high_success_rate(lessons: LessonStore) -> None:
    """Below min_observations nothing is returned; at the threshold the action is; a poor rate is not."""
    record(lessons)
    assert lessons.best_remediation(FP) is None
    lessons.record_outcome(FP, "retry_with_backoff", True)
    lessons.record_outcome(FP, "retry_with_backoff", True)
    assert lessons.best_remediation(FP) is None
    lessons.record_outcome(FP, "retry_with_backoff", True)
    assert lessons.best_remediation(FP) == "retry_with_backoff"
    lessons.record_outcome(FP, "retry_with_backoff", False)  # 3/4 = 0.75 < 0.8
    assert lessons.best_remediation(FP) is None
    assert lessons.best_remediation(FP, min_success_rate=0.75) == "retry_with_backoff"
    lesson = lessons.get(FP)
    assert lesson is not None
    stats = lesson.remediations["retry_with_backoff"]
    assert (stats.tried, stats.succeeded, stats.failed, stats.consecutive_failures) == (4, 3, 1, 1)


def test_a_remediation_that_keeps_failing_stops_being_returned(lessons: LessonStore) -> None:
    """A long good history does not keep an action alive once it fails several times in a row."""
    record(lessons)
    for _ in range(20):
        lessons.record_outcome(FP, "recycle_process", True)
    for _ in range(2):
        lessons.record_outcome(FP, "recycle_process", False)
    assert lessons.best_remediation(FP) == "recycle_process"
    lessons.record_outcome(FP, "recycle_process", False)
    assert lessons.best_remediation(FP) is None
    lessons.record_outcome(FP, "recycle_process", True)  # it worked again (applied by a rule)
    assert lessons.best_remediation(FP) == "recycle_process"


def test_best_remediation_prefers_the_higher_success_rate(lessons: LessonStore) -> None:
    """Among qualifying actions the best rate wins, then the most observations."""
    record(lessons)
    for ok in [True, True, True, True, False]:
        lessons.record_outcome(FP, "retry_with_backoff", ok)
    for ok in [True, True, True]:
        lessons.record_outcome(FP, "circuit_break", ok)
    assert lessons.best_remediation(FP) == "circuit_break"
    assert lessons.best_remediation(FP, min_observations=4) == "retry_with_backoff"
    assert lessons.best_remediation("unknownfp") is None


def test_an_outcome_for_an_unknown_lesson_records_nothing(lessons: LessonStore, store: Store) -> None:
    """No lesson, nothing to attach the outcome to: None, and no key is created."""
    assert lessons.record_outcome(FP, "retry", True) is None
    assert raw(store, lessons.key(FP)) is None


def test_export_then_import_carries_lessons_to_another_namespace(store: Store, namespace: str) -> None:
    """An export imported into an empty namespace reproduces every lesson exactly."""
    source = LessonStore(store, Keys(namespace))
    for i in range(3):
        record(source, f"fp{i}", when=100.0 + i, failure_class="external_dependency")
        source.record_outcome(f"fp{i}", "retry_with_backoff", i != 1)
    exported = source.export()
    assert json.loads(json.dumps(exported)) == exported
    target = LessonStore(store, Keys(namespace + "b"))
    assert target.import_(exported) == 3
    assert target.export() == exported


def test_import_merges_with_existing_lessons_and_skips_bad_entries(
    lessons: LessonStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Counts and outcomes add up, times widen; invalid entries are skipped with a warning."""
    caplog.set_level(logging.WARNING)
    record(lessons, when=500.0, task="local")
    lessons.record_outcome(FP, "retry", True)
    incoming = record(LessonStore(MemoryStore(), Keys("other")), when=400.0, task="remote").to_json()
    incoming["count"] = 4
    incoming["last_seen"] = 450.0
    incoming["remediations"] = {"retry": {"tried": 2, "succeeded": 2, "failed": 0}}
    bad = [{"fingerprint": "x"}, "not a dict", {**incoming, "fingerprint": "bad:fp"}, {**incoming, "count": -1}]
    assert lessons.import_([*bad, incoming]) == 1
    assert caplog.text.count("lesson-import-skipped") == 4
    merged = lessons.get(FP)
    assert merged is not None
    assert (merged.count, merged.first_seen, merged.last_seen) == (5, 400.0, 500.0)
    assert merged.tasks == ("local", "remote")
    assert merged.remediations["retry"].succeeded == 3


def test_import_redacts_secrets_in_incoming_lessons(lessons: LessonStore, store: Store) -> None:
    """Imported text is untrusted: it is redacted before it is stored too."""
    entry = record(LessonStore(MemoryStore(), Keys("other"))).to_json()
    entry["message"] = "login with password=hunter2"
    entry["root_cause"] = "app.auth:login raised E: token=tok_abc123456"
    assert lessons.import_([entry]) == 1
    stored = raw(store, lessons.key(FP))
    assert "hunter2" not in stored and "tok_abc123456" not in stored


def test_delete_forgets_a_lesson(lessons: LessonStore, store: Store) -> None:
    """delete removes the JSON and the index entry."""
    record(lessons)
    assert lessons.delete(FP) is True
    assert lessons.get(FP) is None and lessons.count() == 0
    assert raw(store, lessons.key(FP)) is None
    assert lessons.delete(FP) is False


def test_concurrent_crashes_of_one_fingerprint_lose_no_count(lessons: LessonStore) -> None:
    """Eight threads recording the same fingerprint: every crash is counted (one atomic script each)."""
    def worker(n: int) -> None:
        for i in range(25):
            record(lessons, when=1000.0 + i, task=f"t{n}")
            lessons.record_outcome(FP, "retry", i % 2 == 0)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lesson = lessons.get(FP)
    assert lesson is not None
    assert lesson.count == 200
    assert lesson.remediations["retry"].tried == 200
    assert lesson.remediations["retry"].succeeded == 104


def test_when_defaults_to_the_store_clock(lessons: LessonStore, store: Store) -> None:
    """Without ``when`` the store's clock (Redis TIME) stamps the crash, to the millisecond."""
    before = store.time()
    lesson = lessons.record_crash(FP, task="t", failure_class="logic_error", exc_type="E", message="m")
    assert before - 1 <= lesson.first_seen <= store.time() + 1


def test_programming_errors_raise() -> None:
    """A malformed fingerprint or failure class is a bug in the caller, reported at once."""
    lessons = LessonStore(MemoryStore(), Keys("t"))
    with pytest.raises(ValueError, match="fingerprint"):
        record(lessons, "has:colon")
    with pytest.raises(ValueError, match="failure_class"):
        record(lessons, failure_class="gremlins")
    assert lessons.get("has:colon") is None
    assert lessons.delete("*") is False


def test_lesson_from_json_validates_types() -> None:
    """from_json names the first bad field; integral floats are accepted, booleans are not numbers."""
    good = record(LessonStore(MemoryStore(), Keys("t"))).to_json()
    assert Lesson.from_json({**good, "count": 2.0}).count == 2
    for field, bad in [("count", True), ("count", 1.5), ("first_seen", "now"), ("first_seen", float("nan")),
                       ("domains", "core"), ("message", None), ("remediations", [])]:
        with pytest.raises(ValueError, match=field.split("_")[0]):
            Lesson.from_json({**good, field: bad})


def test_a_redis_outage_degrades_to_memory_without_raising(namespace: str) -> None:
    """With nothing listening, lessons are kept in process memory and no call raises."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2, retry_s=60)
    lessons = LessonStore(store, Keys(namespace))
    lesson = record(lessons)
    lessons.record_outcome(FP, "retry", True)
    assert lesson.count == 1
    assert store.degraded
    assert lessons.get(FP) is not None and lessons.count() == 1
    store.close()


def test_any_text_survives_the_scripts_json_encoding(lessons: LessonStore, store: Store) -> None:
    """Quotes, backslashes, newlines, tabs and non-ASCII text round-trip through Lua and the twin alike."""
    message = 'bad "quote" \\ back\\slash\nline two\ttab é ✓ 日本 🚀 {"json": [1]}'
    lesson = record(lessons, message=message, task='app.tâche "x"', domain="dömain\\1", exc_type="Érreur")
    assert lesson.root_cause == f"Érreur: {message}"
    assert lesson.tasks == ('app.tâche "x"',) and lesson.domains == ("dömain\\1",)
    assert lessons.get(FP) == lesson
    assert json.loads(raw(store, lessons.key(FP)))["root_cause"] == f"Érreur: {message}"


def test_a_non_finite_time_falls_back_to_the_store_clock(lessons: LessonStore, store: Store) -> None:
    """NaN or infinity for ``when`` is replaced by the store's clock rather than stored."""
    lesson = record(lessons, when=float("nan"))
    assert abs(lesson.first_seen - store.time()) < 5
