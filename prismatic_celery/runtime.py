"""The per-app runtime: settings, store, tree and listeners, built once per process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import Celery

from .config import Settings, load_settings
from .log import get_logger, log_event
from .observability.events import (
    CeleryEventListener,
    Dispatcher,
    LogListener,
    StreamListener,
    SupervisionEvent,
    SupervisionListener,
)
from .store import Store, open_store
from .store.keys import Keys
from .supervision.tree import Child, Domain, Supervisor

if TYPE_CHECKING:
    from .admission.shedding.guard import ShedGuard
    from .supervision.reconcile import Reconciler
    from .supervision.slots import RunningSlots
    from .worker.task import TaskGuard

__all__ = ["Installation", "Runtime", "get_runtime", "installation"]

logger = get_logger("runtime")

_ATTR_INSTALL = "_prismatic_installation"
_ATTR_RUNTIME = "_prismatic_runtime"
_lock = threading.RLock()
_DISABLED = "disabled"
_LOCATED = "_prismatic_located"  # cached on the request (a new Context per execution)
_UNSET = object()


@dataclass
class Installation:
    """What ``install(app, ...)`` was given; the runtime is built from it on first use."""

    supervisor: Supervisor | None = None
    listeners: list[SupervisionListener] = field(default_factory=list)
    store: Store | None = None


def installation(app: Celery) -> Installation | None:
    """The installation of ``app``; None when ``install`` was never called on it."""
    found = getattr(app, _ATTR_INSTALL, None)
    return found if isinstance(found, Installation) else None


class Runtime:
    """Everything supervision needs in this process for one app."""

    def __init__(
        self, app: Celery, settings: Settings, *, store: Store | None = None,
        listeners: Iterable[SupervisionListener] = (),
    ) -> None:
        self.app = app
        self.settings = settings
        self.supervisor: Supervisor = settings.supervisor
        self.keys: Keys = settings.keys
        self.store: Store = store or open_store(
            settings.store_url, timeout_s=settings.store_timeout_s, retry_s=settings.store_retry_s,
            transport_options=settings.store_transport_options, home_key=self.keys.key("events"),
        )
        builtin: list[SupervisionListener] = [LogListener(), StreamListener(self.store, self.keys.key("events"),
                                                                           settings.event_stream_maxlen)]
        if settings.send_events:
            builtin.append(CeleryEventListener(app))
        self.dispatcher = Dispatcher([*builtin, *listeners])
        self.pid = os.getpid()
        self._routing_keys: dict[str, str] | None = None
        self.hostname: str | None = None  # the worker's node name, once it has started
        self.worker_domains: tuple[str, ...] = ()  # --domain options of this worker
        self.consumed_queues: tuple[str, ...] = ()  # every queue this worker consumes when nothing is paused
        self.reconciler: Reconciler | None = None  # the worker main process's, once its consumer started
        self.slots: RunningSlots | None = None  # a prefork worker's, made before its pool forks
        from .admission.bulkhead import admission_guards
        from .circuits import Circuits
        from .lessons.learning import Learning
        from .remediation import RemediationRegistry
        from .remediation.dlq import DeadLetterQueue
        from .supervision.engine import Engine

        self.circuits = Circuits(self.store, self.keys, self.dispatcher, specs=settings.circuits,
                                 cache_ttl_s=settings.circuit_cache_s)
        self.registry = RemediationRegistry(settings.remediation_rules or (),
                                            defaults=None if settings.default_rules else ())
        self.engine = Engine(self)
        self.dlq = DeadLetterQueue(self.store, self.keys, settings.dlq_max)
        self.learning: Learning | None = Learning(self) if settings.lessons else None
        self.guards: list[TaskGuard] = []  # the bulkheads add theirs
        self.shed_guard: ShedGuard | None = None  # load shedding, in the worker's main process
        self.guards.extend(admission_guards(self))

    # locating the child of a request --------------------------------------------------
    def _queue_for_routing_key(self, routing_key: str) -> str | None:
        if self._routing_keys is None:
            table: dict[str, str] = {}
            declared: Mapping[str, Any]
            try:
                declared = self.app.amqp.queues
            except Exception:  # an unusual queue config must not break task execution
                declared = {}
            for queue in self.supervisor.queues:
                declared_queue = declared.get(queue)
                table[getattr(declared_queue, "routing_key", None) or queue] = queue
            self._routing_keys = table
        return self._routing_keys.get(routing_key)

    def locate(self, delivery_info: Mapping[str, Any] | None, task_name: str | None) -> tuple[Domain, Child] | None:
        """The domain and child a delivery belongs to (queue, then routing key, then task globs)."""
        info = delivery_info or {}
        for candidate in (info.get("queue"), info.get("routing_key")):
            if isinstance(candidate, str):
                found = self.supervisor.locate(candidate) or self.supervisor.locate(
                    self._queue_for_routing_key(candidate)
                )
                if found:
                    return found
        if task_name:
            return self.supervisor.locate(self.supervisor.route(task_name))
        return None

    def locate_task(self, task: Any) -> tuple[Domain, Child] | None:
        """The domain and child of ``task``'s running request, worked out once per execution."""
        request = task.request
        found = getattr(request, _LOCATED, _UNSET)
        if found is _UNSET:
            delivery = request.delivery_info
            found = self.locate(delivery if isinstance(delivery, dict) else None, task.name)
            setattr(request, _LOCATED, found)
        return found  # type: ignore[return-value]  # what locate() returned for this request

    def emit(self, type_: str, **fields: Any) -> None:
        """Send a supervision event to every listener (failures isolated).

        ``recorded`` says the event is already in the store's event stream (the
        restart script writes its own entries in the same round trip).
        """
        recorded = bool(fields.pop("recorded", False))
        self.dispatcher.emit(SupervisionEvent(type_, fields, recorded=recorded))

    def broadcast_reconcile(self, *, pause: list[str]) -> None:
        """Tell every worker to re-read the pause records now (and stop consuming ``pause``)."""
        try:
            self.app.control.broadcast("supervision_reconcile", arguments={"pause": pause}, reply=False)
        except Exception as exc:  # the timer reconciles within one period anyway
            log_event(logging.WARNING, "broadcast-failed", logger, command="supervision_reconcile",
                      error=repr(exc)[:200])


def get_runtime(app: Celery) -> Runtime | None:
    """The runtime of an installed, enabled app (built and validated on first call).

    Raises :class:`~prismatic_celery.errors.ConfigurationError` for bad settings;
    returns None when the app is not installed or ``prismatic_enabled`` is False.
    """
    found = getattr(app, _ATTR_RUNTIME, None)
    if isinstance(found, Runtime):
        return found
    if found is _DISABLED:
        return None
    install = installation(app)
    if install is None:
        return None
    # Reading the config may load it, which fires on_after_configure, which builds the
    # runtime (install's handler): let that happen before taking the lock.
    app.conf.get("prismatic_enabled")
    with _lock:
        found = getattr(app, _ATTR_RUNTIME, None)
        if isinstance(found, Runtime):
            return found
        settings = load_settings(app, supervisor=install.supervisor)
        if not settings.enabled:
            setattr(app, _ATTR_RUNTIME, _DISABLED)
            return None
        runtime = Runtime(app, settings, store=install.store, listeners=install.listeners)
        setattr(app, _ATTR_RUNTIME, runtime)
        return runtime


def reset_runtime(app: Celery) -> None:
    """Forget the built runtime (tests, or after changing the configuration)."""
    found = getattr(app, _ATTR_RUNTIME, None)
    if isinstance(found, Runtime):
        found.store.close()
    if hasattr(app, _ATTR_RUNTIME):
        delattr(app, _ATTR_RUNTIME)
