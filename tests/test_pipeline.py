"""The per-task pipeline: hooks in order, after-hooks in reverse and always paired, failures isolated."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore, Retry

from prismatic_celery.observability.observer import DEFERRED_MARK
from prismatic_celery.worker.pipeline import Call, Pipeline, Stage


class Recording(Stage):
    """Records its hooks in ``log``; ``defer`` makes its before_run raise Retry."""

    def __init__(self, name: str, log: list[str], *, defer: bool = False, broken: bool = False) -> None:
        self.name, self.log, self.defer, self.broken = name, log, defer, broken

    def before_run(self, task: Any, request: Any) -> None:
        self.log.append(f"before {self.name}")
        if self.defer:
            raise Retry()
        if self.broken:
            raise RuntimeError("a broken hook")

    def wrap(self, task: Any, call: Call) -> Call:
        def wrapped() -> object:
            self.log.append(f"enter {self.name}")
            return call()

        return wrapped

    def on_failure(self, task: Any, request: Any, exc: Exception) -> None:
        self.log.append(f"failure {self.name} {type(exc).__name__}")

    def on_success(self, task: Any, request: Any) -> None:
        self.log.append(f"success {self.name}")

    def after_run(self, task: Any, request: Any, failed: bool) -> None:
        self.log.append(f"after {self.name} failed={failed}")


@pytest.fixture
def task() -> Any:
    app = Celery("pipe", broker="memory://", set_as_current=False)

    @app.task(name="pipe.work", shared=False)
    def work() -> str:
        return "ran"

    work.push_request(id="t1", called_directly=False, is_eager=False)
    yield work
    work.pop_request()


def test_before_hooks_run_in_order_and_after_hooks_in_reverse(task: Any) -> None:
    log: list[str] = []
    pipeline = Pipeline([Recording("a", log), Recording("b", log)])
    assert pipeline.run(task, lambda: "ran") == "ran"
    assert log == ["before a", "before b", "enter a", "enter b", "after b failed=False", "after a failed=False",
                   "success a", "success b"]


def test_a_later_deferral_still_runs_the_earlier_after_hooks_and_marks_the_request(task: Any) -> None:
    log: list[str] = []
    pipeline = Pipeline([Recording("a", log), Recording("b", log, defer=True), Recording("c", log)])
    with pytest.raises(Retry):
        pipeline.run(task, lambda: "never")
    assert log == ["before a", "before b", "after a failed=True"]
    assert getattr(task.request, DEFERRED_MARK, False) is True


def test_a_failing_body_reaches_the_failure_hooks_and_is_raised_as_it_is(task: Any) -> None:
    log: list[str] = []

    def body() -> object:
        raise ValueError("the task's own")

    with pytest.raises(ValueError, match="the task's own"):
        Pipeline([Recording("a", log)]).run(task, body)
    assert log == ["before a", "enter a", "failure a ValueError", "after a failed=True"]


def test_a_broken_hook_is_logged_and_never_fails_the_task(task: Any, caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    assert Pipeline([Recording("a", log, broken=True)]).run(task, lambda: "ran") == "ran"
    assert "supervision-hook-failed" in caplog.text
    assert "after a failed=False" in log


def test_celery_control_flow_passes_untouched(task: Any) -> None:
    log: list[str] = []

    def body() -> object:
        raise Ignore()

    with pytest.raises(Ignore):
        Pipeline([Recording("a", log)]).run(task, body)
    assert log == ["before a", "enter a", "after a failed=True"], "control flow is no failure to decide on"


def test_a_stage_wraps_only_the_bodies_it_names_and_is_asked_once_per_task(task: Any) -> None:
    """``wraps(task)`` is asked once per task name; a stage that declines is never asked to wrap, and the body gets
    its arguments either way."""
    log: list[str] = []
    asked: list[str] = []

    class Declines(Recording):
        def wraps(self, task: Any) -> bool:
            asked.append(task.name)
            return False

    pipeline = Pipeline([Recording("a", log), Declines("b", log)])
    for n in range(3):
        assert pipeline.run(task, lambda x, y=0: x + y, None, (n,), {"y": 10}) == n + 10
    assert asked == ["pipe.work"]
    assert log.count("enter a") == 3 and "enter b" not in log
