"""Pause deferral: a message of a paused queue goes back to the broker before its body runs."""

from __future__ import annotations

from celery.app.task import Context

from ...supervision.engine import Engine
from ...supervision.locate import AnyTask
from ..pipeline import Stage

__all__ = ["PauseStage"]


class PauseStage(Stage):
    """Defers the message (raises Retry) while its queue is paused; one dictionary check otherwise."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pauses = engine.pauses

    def before_run(self, task: AnyTask, request: Context) -> None:
        if self.pauses.current():  # this process's view of the pauses (refreshed once per period)
            self.engine.before_run(task)
