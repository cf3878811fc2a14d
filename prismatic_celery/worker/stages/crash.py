"""Crash handling: what the body's failure or success means for the message and its child (the engine's call)."""

from __future__ import annotations

from celery.app.task import Context

from ...supervision.engine import Engine
from ...supervision.locate import AnyTask
from ..pipeline import Stage

__all__ = ["CrashStage"]


class CrashStage(Stage):
    """A failure is captured and decided by the engine (a re-run raises Retry); a success may end the
    rest_for_one pauses its child caused and records a re-run's remediation as one that worked."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def on_failure(self, task: AnyTask, request: Context, exc: Exception) -> None:
        self.engine.on_crash(task, exc)

    def on_success(self, task: AnyTask, request: Context) -> None:
        self.engine.after_success(task, request)
