"""The logging design: one INFO line per handled crash (fixed field order), WARNING for dead letters, CRITICAL only
for a domain escalation, repeats summarised once per period, one plugin frame in a task's traceback."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

import prismatic_celery
from prismatic_celery.log import RepeatSummary
from prismatic_celery.observability.events import LogListener, SupervisionEvent, level_of, log_fields
from prismatic_celery.store import MemoryStore


@pytest.mark.parametrize(("kind", "fields", "level"), [
    ("remediation", {}, logging.INFO),
    ("crash", {}, logging.INFO),
    ("pause", {}, logging.INFO),
    ("resume", {}, logging.INFO),
    ("dead_letter", {}, logging.WARNING),
    ("restart", {}, logging.WARNING),
    ("escalation", {"reason": "unknown_failure_pattern"}, logging.WARNING),
    ("escalation", {"reason": "supervisor_budget_exceeded"}, logging.CRITICAL),
    ("circuit", {"new_state": "open"}, logging.WARNING),
    ("circuit", {"new_state": "half-open"}, logging.INFO),
])
def test_levels(kind: str, fields: dict[str, str], level: int) -> None:
    """A handled crash is INFO, a dead letter WARNING, only a domain escalation CRITICAL."""
    assert level_of(SupervisionEvent(kind, fields)) == level


def test_a_crash_line_has_a_fixed_field_order_a_short_fingerprint_and_no_hostname(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fields = {"countdown_s": 1.0, "hostname": "w@h", "fingerprint": "f" * 40, "exception": "ConnectionError",
              "task_id": "abc", "task": "t", "child": "storage", "domain": "core", "action": "retry_with_backoff"}
    assert list(log_fields(fields)) == ["domain", "child", "task", "task_id", "exception", "action", "fingerprint",
                                        "countdown_s"]
    LogListener().on_remediation(SupervisionEvent("remediation", fields))
    [record] = caplog.records
    assert record.getMessage() == ("event=supervision-remediation domain=core child=storage task=t task_id=abc "
                                   "exception=ConnectionError action=retry_with_backoff fingerprint=ffffffffffff "
                                   "countdown_s=1.0")


def test_repeats_are_logged_once_then_summarised_once_per_period(caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """43 pauses of one queue in a minute: one line, then one summary line saying 42 more."""
    caplog.set_level(logging.INFO)
    clock = [100.0]
    monkeypatch.setattr("prismatic_celery.log.time.monotonic", lambda: clock[0])
    repeats = RepeatSummary(60.0)
    for _ in range(43):
        repeats.log("queue-paused:cache", logging.INFO, "queue-paused", queue="cache", reason="rest_for_one")
        clock[0] += 1
    repeats.log("queue-paused:storage", logging.INFO, "queue-paused", queue="storage", reason="manual")
    repeats.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "event=queue-paused queue=cache reason=rest_for_one", "event=queue-paused queue=storage reason=manual"]
    clock[0] += 30
    repeats.flush()
    assert caplog.records[-1].getMessage() == ("event=queue-paused-repeated queue=cache reason=rest_for_one "
                                               "repeats=42 period_s=73.0")
    assert all(r.levelno == logging.INFO for r in caplog.records) and len(caplog.records) == 3
    repeats.log("queue-paused:cache", logging.INFO, "queue-paused", queue="cache", reason="rest_for_one")
    assert caplog.records[-1].getMessage() == "event=queue-paused queue=cache reason=rest_for_one"


def test_a_failed_tasks_traceback_carries_one_plugin_frame() -> None:
    """The wrappers (``_supervised``, the engine's call, the circuits) leave the traceback; the task's own frames
    stay."""
    app = Celery("tb", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_store_url="memory://", prismatic_domains={"core": {"children": ["storage"]}},
                    prismatic_circuits={"dep": {}})
    prismatic_celery.install(app, store=MemoryStore())

    @app.task(name="tb.fail", shared=False, circuits=["dep"])
    def fail() -> None:
        raise ValueError("boom")

    result = fail.apply(queue="storage")
    traceback = str(result.traceback)
    assert "ValueError: boom" in traceback and 'in fail\n' in traceback
    plugin = [line for line in traceback.splitlines() if line.lstrip().startswith("File") and
              ("prismatic_celery" in line or "pybreaker" in line)]
    assert len(plugin) == 1 and "in __call__" in plugin[0], traceback
