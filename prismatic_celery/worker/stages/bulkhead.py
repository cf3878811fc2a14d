"""Bulkheads: a capped domain's slot (and cluster lease) is held around the body."""

from __future__ import annotations

from celery.app.task import Context

from ...admission.bulkhead import BulkheadGuard
from ...supervision.locate import AnyTask
from ..pipeline import Stage

__all__ = ["BulkheadStage"]


class BulkheadStage(Stage):
    """Takes the slot before the body (deferring the message when none is free) and always gives it back."""

    def __init__(self, guard: BulkheadGuard) -> None:
        self.guard = guard

    def before_run(self, task: AnyTask, request: Context) -> None:
        self.guard.before_run(task)

    def after_run(self, task: AnyTask, request: Context, failed: bool) -> None:
        self.guard.after_run(task, failed)
