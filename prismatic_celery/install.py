"""``install(app)``: enable supervision the Celery way, from the app's configuration."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from celery import Celery
from celery.utils.imports import symbol_by_name

from .admission.shedding.priority import connect_priority_marks
from .errors import ConfigurationError
from .log import get_logger, log_event, set_json
from .observability.events import SupervisionListener
from .observability.observer import Observer, connect_signals
from .runtime import _ATTR_INSTALL, Installation, Runtime, get_runtime, installation, reset_runtime
from .store import Store
from .store.base import safe_url
from .supervision.tree import Supervisor
from .worker import control  # noqa: F401  (registers the remote control commands)
from .worker.bootsteps import CONSUMER_STEPS, DOMAIN_OPTION, DomainStep
from .worker.task import SupervisedTask, supervise_task

__all__ = ["install", "supervise_registered_tasks"]

logger = get_logger()
#: A Celery router: the task's name (then its arguments and options) to its route, or None.
Router = Callable[..., dict[str, str] | None]


def install(
    app: Celery,
    *,
    supervisor: Supervisor | None = None,
    listeners: Iterable[SupervisionListener] = (),
    store: Store | None = None,
) -> Installation:
    """Enable prismatic-celery on ``app``.

    Reads the ``prismatic_*`` settings from ``app.conf`` (validated as soon as
    the app is configured, and again when a worker boots), makes
    :class:`SupervisedTask` the app's task base, supervises tasks already
    declared with another base, connects the observation signals, marks the
    priority of each message this process publishes (load shedding reads it as
    importance only when a producer set it), and adds the worker bootsteps and
    the ``--domain`` worker option.

    ``supervisor`` declares the tree in Python instead of ``prismatic_domains``;
    ``listeners`` are :class:`SupervisionListener` instances; ``store``
    replaces the store built from ``prismatic_store_url`` (tests, embedded use).
    Calling it again replaces the previous installation.
    """
    previous = installation(app)
    setup = Installation(supervisor=supervisor, listeners=list(listeners), store=store)
    setattr(app, _ATTR_INSTALL, setup)
    if previous is not None:
        reset_runtime(app)
        return setup

    _use_supervised_base(app)
    _censor_store_url()
    connect_signals(_observer)
    connect_priority_marks()
    app.steps["worker"].add(DomainStep)
    for step in CONSUMER_STEPS:
        app.steps["consumer"].add(step)
    app.user_options["worker"].add(DOMAIN_OPTION)
    app.on_after_configure.connect(_on_configured, weak=False)
    app.on_after_finalize.connect(_on_finalized, weak=False)
    if getattr(app, "configured", False):
        _on_configured(app)
    if getattr(app, "finalized", False):
        supervise_registered_tasks(app)
    return setup


def _observer(app: Celery) -> Observer | None:
    """The outcome counters of ``app`` in this process (None when it is not supervised)."""
    runtime = get_runtime(app)
    return runtime.observer if runtime is not None else None


def _censor_store_url() -> None:
    """Mask the store's password wherever Celery prints settings (``celery inspect conf``, ``celery report``,
    Flower's worker pages): Celery censors ``broker_url`` and ``result_backend`` by name, not this setting."""
    from celery.app import utils

    original = utils.filter_hidden_settings
    if getattr(original, "_prismatic", False):
        return

    def filter_hidden_settings(conf: dict[str, object]) -> dict[str, object]:
        return {key: safe_url(value) if isinstance(key, str) and key.lower() == "prismatic_store_url"
                and isinstance(value, str) else value for key, value in original(conf).items()}

    filter_hidden_settings._prismatic = True  # type: ignore[attr-defined]
    utils.filter_hidden_settings = filter_hidden_settings


def _use_supervised_base(app: Celery) -> None:
    """Make every task declared from now on derive from SupervisedTask."""
    configured: object = app.task_cls
    base: object = symbol_by_name(configured) if isinstance(configured, str) else configured
    if not (isinstance(base, type) and issubclass(base, SupervisedTask)):
        bases = (SupervisedTask, base) if isinstance(base, type) else (SupervisedTask,)
        supervised = type("SupervisedTask", bases, {"__module__": SupervisedTask.__module__})
        setattr(app, "task_cls", supervised)
    app.__dict__.pop("Task", None)  # drop the cached default Task class so the new base is used


def supervise_registered_tasks(app: Celery) -> list[str]:
    """Mix SupervisedTask into every registered task lacking it; the names changed."""
    return [name for name, task in list(app.tasks.items()) if supervise_task(task)]


def _on_finalized(sender: Celery, **_: object) -> None:
    changed = supervise_registered_tasks(sender)
    if changed:
        log_event(logging.DEBUG, "tasks-supervised", logger, tasks=",".join(changed))


def _on_configured(sender: Celery, **_: object) -> None:
    """Validate now and add the router; an invalid configuration is reported once, where it matters: the
    worker and ``celery supervision`` stop with it (one line), and a producer's first send raises it."""
    try:
        runtime = get_runtime(sender)
    except ConfigurationError as exc:
        _prepend_router(sender, _refuse_to_send(exc))
        return
    except Exception as exc:  # not the settings: reported where the runtime is next needed
        log_event(logging.ERROR, "runtime-unavailable", logger, error=repr(exc)[:300])
        return
    if runtime is None:
        return
    set_json(runtime.settings.log_json)
    _add_router(sender, runtime)


def _refuse_to_send(error: ConfigurationError) -> Router:
    """A router that raises ``error`` for every task sent: a producer whose supervision settings are invalid
    would otherwise send tasks that no worker of this configuration can start to supervise."""

    def refuse(name: str, *_: object, **__: object) -> None:
        raise ConfigurationError(error.setting, f"{error.problem} (prismatic-celery refused to send {name})")

    return refuse


def _add_router(app: Celery, runtime: Runtime) -> None:
    """Route tasks named by a child's ``tasks`` globs to the child's queue."""
    if not any(c.tasks for d in runtime.supervisor.domain_list for c in d.child_list):
        return

    def route_supervised(name: str, *_: object, **__: object) -> dict[str, str] | None:
        current = get_runtime(app)
        queue = current.supervisor.route(name) if current is not None else None
        return {"queue": queue} if queue else None

    _prepend_router(app, route_supervised)


def _prepend_router(app: Celery, router: Router) -> None:
    """Put ``router`` before the app's own ``task_routes`` (which keep working after it)."""
    existing = app.conf.task_routes
    if existing is None:
        routes: tuple[object, ...] = ()
    elif isinstance(existing, (list, tuple)):
        routes = tuple(existing)
    else:
        routes = (existing,)
    app.conf.task_routes = (router, *routes)
    amqp = app.amqp
    amqp.__dict__.pop("router", None)
    amqp.flush_routes()
