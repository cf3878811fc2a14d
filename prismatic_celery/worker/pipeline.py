"""The per-task pipeline: the stages every supervised execution passes through, in the task's process.

In the manner of dramatiq's middleware, each concern is one :class:`Stage` (one file each under
:mod:`.stages`) with optional hooks:

* ``before_run(task)`` runs in stage order before the body; it may put the message back by raising
  Celery's ``Retry`` (a deferral: the request gets ``DEFERRED_MARK``) or ``Ignore``;
* ``wrap(task, call)`` wraps the body (the first stage's wrapper is the outermost);
* ``on_failure(task, exc)`` / ``on_success(task)`` decide what the body's outcome means (may raise ``Retry``);
* ``after_run(task, failed)`` runs in reverse order, once for every stage whose ``before_run`` passed, whatever
  happened later: when a later stage defers the message, the earlier stages' ``after_run`` still run.

Celery's control flow (``Retry``, ``Ignore``, ``Reject``) passes untouched; any other exception of a hook is
logged and dropped: the plugin is never the reason a task fails.

Load shedding acts before all of this, in the worker's main process (the shedding guard in front of the
consumer's task requests, installed by ``SheddingStep``): a message it parks never reaches a pool process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import ParamSpec

from celery.exceptions import Ignore, Reject, Retry

from ..circuits import CircuitOpenError
from ..log import get_logger, log_event
from ..observability.observer import DEFERRED_MARK
from ..supervision.locate import AnyTask

__all__ = ["CONTROL_FLOW", "Call", "Pipeline", "Stage", "TaskGuard"]

logger = get_logger("task")
P = ParamSpec("P")

# Exceptions Celery uses for control flow: never crashes, always passed through.
CONTROL_FLOW: tuple[type[BaseException], ...] = (Retry, Ignore, Reject)
#: The task body with its arguments bound.
Call = Callable[[], object]


class Stage:
    """One concern of the pipeline; every hook is a no-op unless overridden."""

    def before_run(self, task: AnyTask) -> None:
        """Called before the body; may defer the message (raise ``Retry``) or divert it (``Ignore``)."""

    def wrap(self, task: AnyTask, call: Call) -> Call:
        """The body as this stage runs it (default: as it is)."""
        return call

    def on_failure(self, task: AnyTask, exc: Exception) -> None:
        """The body raised ``exc`` (not control flow); may re-run the message (raise ``Retry``)."""

    def on_success(self, task: AnyTask) -> None:
        """The body returned."""

    def after_run(self, task: AnyTask, failed: bool) -> None:
        """Called once after a ``before_run`` that passed (``failed``: the body did not return)."""


#: The name tests and users know a guard by: a stage with ``before_run`` and ``after_run``.
TaskGuard = Stage


def _overrides(stage: Stage, name: str) -> bool:
    return getattr(type(stage), name) is not getattr(Stage, name)


class Pipeline:
    """The stages, in order; each hook list holds only the stages that override it (a cheap success path)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self._before = [s for s in self.stages if _overrides(s, "before_run") or _overrides(s, "after_run")]
        self._wrap = [s for s in reversed(self.stages) if _overrides(s, "wrap")]
        self._failure = [s for s in self.stages if _overrides(s, "on_failure")]
        self._success = [s for s in self.stages if _overrides(s, "on_success")]
        #: Of the stages entered, those whose ``after_run`` does something (the others need no call).
        self._pairs = frozenset(id(s) for s in self.stages if _overrides(s, "after_run"))

    def run(self, task: AnyTask, call: Call) -> object:
        """Run ``call`` (the body, its arguments bound) through every stage."""
        request = task.request
        entered: list[Stage] = []
        failed = True
        try:
            for stage in self._before:
                _deferring(request, stage.before_run, task)
                if id(stage) in self._pairs:
                    entered.append(stage)
            for stage in self._wrap:
                call = stage.wrap(task, call)
            try:
                result = call()
                failed = False
            except CONTROL_FLOW:
                raise
            except CircuitOpenError as exc:  # a circuit the task depends on is open: the message is deferred
                for stage in self._failure:
                    _deferring(request, stage.on_failure, task, exc)
                raise
            except Exception as exc:
                for stage in self._failure:
                    _guarded(stage.on_failure, task, exc)
                raise
        finally:
            if entered:
                _after(entered, task, failed)
        for stage in self._success:
            _guarded(stage.on_success, task)
        return result


def _after(entered: list[Stage], task: AnyTask, failed: bool) -> None:
    """Every entered stage's ``after_run``, last first; a Retry/Ignore one raises is raised after all ran."""
    decided: BaseException | None = None
    for stage in reversed(entered):
        try:
            _guarded(stage.after_run, task, failed)
        except (Retry, Ignore) as exc:
            decided = decided or exc
    if decided is not None:
        raise decided


def _guarded(hook: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    """Run a hook: Retry/Ignore pass (they are the decision), anything else is logged and dropped."""
    try:
        hook(*args, **kwargs)
    except (Retry, Ignore):
        raise
    except Exception as exc:  # the plugin must never be the reason a task fails
        _hook_failed(hook, exc)


def _deferring(request: object, hook: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    """Run a hook that may put the message back before its body ran; its Retry then marks a deferral
    (Ignore passes; anything else is logged and dropped)."""
    try:
        hook(*args, **kwargs)
    except Retry:
        setattr(request, DEFERRED_MARK, True)
        raise
    except Ignore:
        raise
    except Exception as exc:  # the plugin must never be the reason a task fails
        _hook_failed(hook, exc)


def _hook_failed(hook: Callable[..., None], exc: Exception) -> None:
    log_event(logging.ERROR, "supervision-hook-failed", logger, hook=getattr(hook, "__name__", "?"),
              error=repr(exc)[:300])
