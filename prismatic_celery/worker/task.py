"""The supervised Task base class: where a crash is turned into a supervision decision.

Signal handlers cannot change a task's fate (DESIGN.md section 2), so the
decision is taken in ``__call__``, around the task body, in the process that
runs it. A task that just works pays a few dictionary lookups: no store round
trip, no signal dispatch (its start and success are counted here, in memory).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any

from celery import Task
from celery._state import _task_stack  # type: ignore[attr-defined]  # private, not in the stubs
from celery.exceptions import Ignore, Reject, Retry

from ..circuits import CircuitOpenError
from ..log import get_logger, log_event
from ..observability.observer import DEFERRED_MARK, SUCCEEDED_MARK, count_outcome
from ..runtime import Runtime, get_runtime

__all__ = ["CONTROL_FLOW", "SupervisedTask", "TaskGuard", "supervise_task"]

logger = get_logger("task")

# Exceptions Celery uses for control flow: never crashes, always passed through.
CONTROL_FLOW: tuple[type[BaseException], ...] = (Retry, Ignore, Reject)


def _runtime(task: Task[Any, Any]) -> Runtime | None:
    try:
        return get_runtime(task.app)
    except Exception as exc:  # bad configuration fails the worker at start, never a task
        log_event(logging.ERROR, "runtime-unavailable", logger, task=task.name, error=repr(exc)[:300])
        return None


class TaskGuard:
    """A hook around every supervised task, in the process that runs it (no-op by default).

    ``before_run`` may defer or divert the message by raising Celery's ``Retry``
    or ``Ignore`` (after putting the message somewhere safe); any other exception
    is logged and ignored. ``after_run`` always runs once ``before_run`` passed.
    """

    def before_run(self, task: Task[Any, Any]) -> None:
        """Called before the task body."""

    def after_run(self, task: Task[Any, Any], failed: bool) -> None:
        """Called after the task body (``failed`` when it raised)."""


class SupervisedTask(Task):  # type: ignore[type-arg]  # generic only in the stubs' view of subclasses
    """Base class of supervised tasks; ``install`` makes it the app's default.

    Task options: ``supervise=False`` opts one task out of supervision (its outcomes are still counted).
    """

    supervise: bool = True
    Request = "prismatic_celery.worker.request:SupervisedRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        runtime = _runtime(self)
        if runtime is None:
            return super().__call__(*args, **kwargs)
        request = self.request
        located = runtime.locate_task(self)
        queue = located[1].queue if located is not None else None
        counted = not request.called_directly  # a plain function call is no execution of a message
        if counted:
            count_outcome(runtime, request, queue, "started")
        slots = runtime.slots if counted else None
        if slots is not None:
            slots.enter(str(request.id))  # a prefork pool process: which message it runs, if it dies
        try:
            if self.supervise:
                result = self._supervised(runtime, request, args, kwargs)
            else:
                result = super().__call__(*args, **kwargs)
        except Ignore as diverted:
            # Control flow, never shown: Celery copies every frame of its traceback into the
            # result it sends back to the worker, so it leaves from here, one frame deep.
            raise diverted.with_traceback(None) from None
        except Retry:
            if counted and getattr(request, DEFERRED_MARK, False):
                count_outcome(runtime, request, queue, "started", -1)  # put back before it started
            raise
        except Exception as exc:
            # The task's own failure, re-raised as it is (B904 is about a new exception): its traceback keeps
            # this one plugin frame, not the wrappers'.
            raise exc.with_traceback(_task_frames(exc.__traceback__))  # noqa: B904
        finally:
            if slots is not None:
                slots.leave()
        if counted:
            setattr(request, SUCCEEDED_MARK, True)
            count_outcome(runtime, request, queue, "succeeded")
        return result

    def _supervised(self, runtime: Runtime, request: Any, args: Any, kwargs: Any) -> Any:
        """The task body between the engine's and the guards' hooks."""
        engine = runtime.engine
        _deferring(request, engine.before_run, self)
        guards = runtime.guards
        for guard in guards:
            _deferring(request, guard.before_run, self)
        failed = True
        body = self._traced_run if self._plain_call() and not request.called_directly else super().__call__
        try:
            result = engine.call(self, body, args, kwargs)
            failed = False
        except CONTROL_FLOW:
            raise
        except CircuitOpenError as exc:  # a circuit the task depends on is open: the engine defers the message
            _deferring(request, engine.on_crash, self, exc)
            raise
        except Exception as exc:
            _guarded(engine.on_crash, self, exc)
            raise
        finally:
            for guard in reversed(guards):
                _guarded(guard.after_run, self, failed)
        _guarded(engine.after_success, self)
        return result

    @classmethod
    def _plain_call(cls) -> bool:
        """True when no class between this one and Celery's Task overrides ``__call__``."""
        found = cls.__dict__.get("_prismatic_plain_call")
        if found is None:
            mro = cls.__mro__
            below = mro[mro.index(SupervisedTask) + 1:]
            found = next((c for c in below if "__call__" in c.__dict__), Task) is Task
            setattr(cls, "_prismatic_plain_call", found)
        return bool(found)

    def _traced_run(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``Task.__call__`` without its second copy of the request: the worker's tracer has
        already pushed this execution's request, so only the task stack is needed."""
        _task_stack.push(self)
        try:
            return self.run(*args, **kwargs)
        finally:
            _task_stack.pop()


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_PYBREAKER = "pybreaker"


def _plugin_frame(tb: TracebackType) -> bool:
    """A frame of the supervision wrappers: this package's or pybreaker's (a circuit's call)."""
    filename = tb.tb_frame.f_code.co_filename
    return filename.startswith(_PACKAGE_DIR) or _PYBREAKER in os.path.basename(filename)


def _task_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from the first frame that is not the plugin's: the frames of ``__call__``, ``_supervised``, the
    engine's and the circuits' wrappers go; the task's own frames (and anything it called, plugin or not) stay."""
    first = tb
    while first is not None and _plugin_frame(first):
        first = first.tb_next
    return first if first is not None else tb


def _guarded(hook: Callable[..., None], *args: Any) -> None:
    """Run an engine hook: Retry/Ignore pass (they are the decision), anything else is logged and dropped."""
    try:
        hook(*args)
    except (Retry, Ignore):
        raise
    except Exception as exc:  # the plugin must never be the reason a task fails
        log_event(logging.ERROR, "supervision-hook-failed", logger, hook=getattr(hook, "__name__", "?"),
                  error=repr(exc)[:300])


def _deferring(request: Any, hook: Callable[..., None], *args: Any) -> None:
    """Run a hook that may put the message back before its body ran; its Retry then marks a deferral."""
    try:
        _guarded(hook, *args)
    except Retry:
        setattr(request, DEFERRED_MARK, True)
        raise


def supervise_task(task: Task[Any, Any]) -> bool:
    """Give an existing task instance the supervised behaviour; True when it changed.

    Tasks declared with ``@app.task`` after ``install`` already are supervised.
    A task whose ``base=`` class does not derive from :class:`SupervisedTask`
    gets a subclass mixing it in (its own overrides keep precedence below
    the supervision wrapper).
    """
    if isinstance(task, SupervisedTask) or task.name.startswith("celery."):
        return False
    cls: type = type(task)
    task.__class__ = type(cls.__name__, (SupervisedTask, cls), {"__module__": cls.__module__})
    return True
