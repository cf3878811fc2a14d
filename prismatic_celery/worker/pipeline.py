"""The per-task pipeline: the stages every supervised execution passes through, in the task's process.

In the manner of dramatiq's middleware, each concern is one :class:`Stage` (one file each under
:mod:`.stages`) with optional hooks:

* ``before_run(task, request)`` runs in stage order before the body; it may put the message back by raising
  Celery's ``Retry`` (a deferral: the request gets ``DEFERRED_MARK``) or ``Ignore``;
* ``wrap(task, call)`` wraps the body (the first stage's wrapper is the outermost), for the tasks its
  ``wraps(task)`` names (asked once per task name);
* ``on_failure(task, request, exc)`` / ``on_success(task, request)`` decide what the body's outcome means (may
  raise ``Retry``);
* ``after_run(task, request, failed)`` runs in reverse order, once for every stage whose ``before_run`` passed,
  whatever happened later: when a later stage defers the message, the earlier stages' ``after_run`` still run.

``request`` is the execution's ``task.request``, looked up once by the caller (Celery's request stack is a
thread-local lookup each time). A task that just works costs one call of each hook a stage defines and no other
frame: the success path is the pipeline's own loop.

Celery's control flow (``Retry``, ``Ignore``, ``Reject``) passes untouched; any other exception of a hook is
logged and dropped: the plugin is never the reason a task fails.

Load shedding acts before all of this, in the worker's main process (the shedding guard in front of the
consumer's task requests, installed by ``SheddingStep``): a message it parks never reaches a pool process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

from celery.app.task import Context
from celery.exceptions import Ignore, Reject, Retry

from ..circuits import CircuitOpenError
from ..log import get_logger, log_event
from ..observability.observer import DEFERRED_MARK
from ..supervision.locate import AnyTask

__all__ = ["CONTROL_FLOW", "Call", "Pipeline", "Stage", "TaskGuard"]

logger = get_logger("task")

# Exceptions Celery uses for control flow: never crashes, always passed through.
CONTROL_FLOW: tuple[type[BaseException], ...] = (Retry, Ignore, Reject)
#: The task body with its arguments bound.
Call = Callable[[], object]


class Stage:
    """One concern of the pipeline; every hook is a no-op unless overridden."""

    def before_run(self, task: AnyTask, request: Context) -> None:
        """Called before the body; may defer the message (raise ``Retry``) or divert it (``Ignore``)."""

    def wrap(self, task: AnyTask, call: Call) -> Call:
        """The body as this stage runs it (default: as it is)."""
        return call

    def wraps(self, task: AnyTask) -> bool:
        """Whether :meth:`wrap` changes ``task``'s body (asked once per task name; default: when overridden)."""
        return _overrides(self, "wrap")

    def on_failure(self, task: AnyTask, request: Context, exc: Exception) -> None:
        """The body raised ``exc`` (not control flow); may re-run the message (raise ``Retry``)."""

    def on_success(self, task: AnyTask, request: Context) -> None:
        """The body returned."""

    def after_run(self, task: AnyTask, request: Context, failed: bool) -> None:
        """Called once after a ``before_run`` that passed (``failed``: the body did not return)."""


#: The name tests and users know a guard by: a stage with ``before_run`` and ``after_run``.
TaskGuard = Stage


def _overrides(stage: Stage, name: str) -> bool:
    return getattr(type(stage), name) is not getattr(Stage, name)


class Pipeline:
    """The stages, in order; each hook list holds only the stages that override it (a cheap success path)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        #: Each stage with a ``before_run`` or ``after_run``, and whether its ``after_run`` does something (the
        #: others need no call).
        self._before = [(s, _overrides(s, "after_run")) for s in self.stages
                        if _overrides(s, "before_run") or _overrides(s, "after_run")]
        self._wrap = [s for s in reversed(self.stages) if _overrides(s, "wrap")]
        #: Per task name, the stages that wrap its body (most tasks: none, and the body is called as it is).
        self._wraps: dict[str, tuple[Stage, ...]] = {}
        self._failure = [s for s in self.stages if _overrides(s, "on_failure")]
        self._success = [s for s in self.stages if _overrides(s, "on_success")]

    def run(self, task: AnyTask, call: Callable[..., object], request: Context | None = None,
            args: tuple[object, ...] = (), kwargs: dict[str, object] | None = None) -> object:
        """Run ``call(*args, **kwargs)`` (the body) through every stage; ``request`` is ``task.request`` (looked up
        here when not given)."""
        if request is None:
            request = task.request
        entered: list[Stage] = []
        failed = True
        try:
            for stage, paired in self._before:
                try:
                    stage.before_run(task, request)
                except Exception as exc:
                    _raised(stage.before_run, request, exc, deferral=True)  # put back before its body ran
                if paired:
                    entered.append(stage)
            wraps = self._wraps.get(task.name)
            if wraps is None:
                wraps = self._wraps[task.name] = tuple(s for s in self._wrap if s.wraps(task))
            if wraps:
                call = functools.partial(call, *args, **(kwargs or {}))
                args, kwargs = (), None
                for stage in wraps:
                    call = stage.wrap(task, call)
            try:
                result = call(*args, **kwargs) if kwargs else call(*args)
                failed = False
            except CONTROL_FLOW:
                raise
            except CircuitOpenError as exc:  # a circuit the task depends on is open: the message is deferred
                _failed(self._failure, task, request, exc, deferring=True)
                raise
            except Exception as exc:
                _failed(self._failure, task, request, exc, deferring=False)
                raise
        finally:
            if entered:
                _after(entered, task, request, failed)
        for stage in self._success:
            try:
                stage.on_success(task, request)
            except Exception as exc:
                _raised(stage.on_success, request, exc, deferral=False)
        return result


def _failed(stages: list[Stage], task: AnyTask, request: Context, exc: Exception, *, deferring: bool) -> None:
    """Every stage's ``on_failure``; with ``deferring`` (the body never ran) a Retry marks a deferral."""
    for stage in stages:
        try:
            stage.on_failure(task, request, exc)
        except Exception as hook_exc:
            _raised(stage.on_failure, request, hook_exc, deferral=deferring)


def _raised(hook: Callable[..., None], request: Context, exc: Exception, *, deferral: bool) -> None:
    """What a hook's exception means: ``Retry`` (a deferral, with ``deferral``: the request gets
    ``DEFERRED_MARK``) and ``Ignore`` are the decision and raised again; anything else is logged and dropped (the
    plugin must never be the reason a task fails)."""
    if isinstance(exc, Retry):
        if deferral:
            setattr(request, DEFERRED_MARK, True)
        raise exc
    if isinstance(exc, Ignore):
        raise exc
    _hook_failed(hook, exc)


def _after(entered: list[Stage], task: AnyTask, request: Context, failed: bool) -> None:
    """Every entered stage's ``after_run``, last first; a Retry/Ignore one raises is raised after all ran."""
    decided: BaseException | None = None
    for stage in reversed(entered):
        try:
            stage.after_run(task, request, failed)
        except (Retry, Ignore) as exc:
            decided = decided or exc
        except Exception as exc:  # the plugin must never be the reason a task fails
            _hook_failed(stage.after_run, exc)
    if decided is not None:
        raise decided


def _hook_failed(hook: Callable[..., None], exc: Exception) -> None:
    log_event(logging.ERROR, "supervision-hook-failed", logger, hook=getattr(hook, "__name__", "?"),
              error=repr(exc)[:300])
