"""The supervised Task base class: where a crash is turned into a supervision decision.

Signal handlers cannot change a task's fate, so the decision is taken in ``__call__``, around the task body,
in the process that runs it, by the per-task :class:`~.pipeline.Pipeline`. A task that just works pays a few
dictionary lookups: no store round trip, no signal dispatch (its start and success are counted here, in memory).
"""

from __future__ import annotations

import logging
import os
import weakref
from types import TracebackType

from celery import Task
from celery.exceptions import Ignore, Retry

from ..log import get_logger, log_event
from ..observability.observer import DEFERRED_MARK, SUCCEEDED_MARK, UNSUPERVISED
from ..runtime import Runtime, get_runtime
from ..supervision.locate import AnyTask
from .pipeline import CONTROL_FLOW, Pipeline, Stage, TaskGuard
from .stages import BulkheadStage, CircuitStage, CrashStage, PauseStage
from .state import worker_state

__all__ = ["CONTROL_FLOW", "SupervisedTask", "TaskGuard", "pipeline_for", "set_pipeline", "supervise_task",
           "task_pipeline"]

logger = get_logger("task")

_pipelines: weakref.WeakKeyDictionary[Runtime, Pipeline] = weakref.WeakKeyDictionary()
#: The runtime and pipeline of the last call: a worker process has one runtime, so one identity check finds its
#: pipeline (the weak dictionary's lookup makes a weak reference per call).
_last: list[tuple[Runtime, Pipeline]] = []


def task_pipeline(runtime: Runtime, guards: tuple[Stage, ...] = ()) -> Pipeline:
    """The stages of ``runtime``'s tasks, in order: crash handling (outermost: it sees the body's outcome
    last), pause deferral, the bulkheads, ``guards`` (extra stages), the circuit breakers (innermost)."""
    stages: list[Stage] = [CrashStage(runtime.engine), PauseStage(runtime.engine)]
    if runtime.bulkhead is not None:
        stages.append(BulkheadStage(runtime.bulkhead))
    return Pipeline([*stages, *guards, CircuitStage(runtime.circuits)])


def pipeline_for(runtime: Runtime) -> Pipeline:
    """The pipeline ``runtime``'s tasks run through in this process (built on first use)."""
    if _last and _last[0][0] is runtime:
        return _last[0][1]
    found = _pipelines.get(runtime)
    if found is None:
        found = _pipelines[runtime] = task_pipeline(runtime)
    _last[:] = [(runtime, found)]
    return found


def set_pipeline(runtime: Runtime, pipeline: Pipeline | None) -> None:
    """Replace ``runtime``'s pipeline (None: back to the default one)."""
    _last.clear()
    if pipeline is None:
        _pipelines.pop(runtime, None)
    else:
        _pipelines[runtime] = pipeline


class SupervisedTask(Task):  # type: ignore[type-arg]  # generic only in the stubs' view of subclasses
    """Base class of supervised tasks; ``install`` makes it the app's default.

    Task options: ``supervise=False`` opts one task out of supervision (its outcomes are still counted).
    """

    supervise: bool = True
    Request = "prismatic_celery.worker.request:SupervisedRequest"
    _plain_call: bool = True
    """No class between this one and Celery's Task overrides ``__call__`` (set for each subclass)."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        app = self.app
        try:
            runtime = get_runtime(app)
        except Exception as exc:  # bad configuration fails the worker at start, never a task
            log_event(logging.ERROR, "runtime-unavailable", logger, task=self.name, error=repr(exc)[:300])
            runtime = None
        if runtime is None:
            return super().__call__(*args, **kwargs)
        request = self.request  # looked up once: Celery's request stack is a thread-local lookup each time
        counted = not request.called_directly  # a plain function call is no execution of a message
        queue, slots = UNSUPERVISED, None
        if counted:
            located = runtime.locator.locate(request.delivery_info, self.name)
            queue = located[1].queue if located is not None else UNSUPERVISED
            state = worker_state(app)
            slots = state.slots if state is not None else None
            if slots is not None:  # a prefork pool process: which message it runs (if it dies), which domain
                slots.enter(str(request.id), located[0].name if located is not None else None)
        try:
            if not self.supervise:
                result = super().__call__(*args, **kwargs)
            else:
                # A plain task run by the worker's tracer: its task and request are pushed already, the body is
                # ``run`` itself (Celery's ``Task.__call__`` would push second copies of both).
                body = self.run if counted and self._plain_call else super().__call__
                result = pipeline_for(runtime).run(self, body, request, args, kwargs)
        except BaseException as exc:
            if counted and not getattr(request, DEFERRED_MARK, False):  # put back before it ran: no start
                runtime.observer.stats.count_run(request.hostname, queue, False)
            if isinstance(exc, Ignore):
                # Control flow, never shown: Celery copies every frame of its traceback into the
                # result it sends back to the worker, so it leaves from here, one frame deep.
                raise exc.with_traceback(None) from None
            if isinstance(exc, Exception) and not isinstance(exc, Retry):
                # The task's own failure, re-raised as it is (B904 is about a new exception): its traceback keeps
                # this one plugin frame, not the wrappers'.
                raise exc.with_traceback(_task_frames(exc.__traceback__))  # noqa: B904
            raise
        finally:
            if slots is not None:
                slots.leave()
        if counted:
            setattr(request, SUCCEEDED_MARK, True)
            runtime.observer.stats.count_run(request.hostname, queue, True)
        return result

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        below = mro[mro.index(SupervisedTask) + 1:]
        cls._plain_call = next((c for c in below if "__call__" in c.__dict__), Task) is Task


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_PYBREAKER = "pybreaker"


def _plugin_frame(tb: TracebackType) -> bool:
    """A frame of the supervision wrappers: this package's or pybreaker's (a circuit's call)."""
    filename = tb.tb_frame.f_code.co_filename
    return filename.startswith(_PACKAGE_DIR) or _PYBREAKER in os.path.basename(filename)


def _task_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from the first frame that is not the plugin's: the frames of ``__call__``, the pipeline's and its
    stages', and the circuits' wrappers go; the task's own frames (and anything it called, plugin or not) stay."""
    first = tb
    while first is not None and _plugin_frame(first):
        first = first.tb_next
    return first if first is not None else tb


def supervise_task(task: AnyTask) -> bool:
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
