"""The per-app runtime: settings, store, tree and listeners, built once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from .config import Settings, load_settings
from .keys import Keys
from .listeners import Dispatcher, LogListener, SupervisionEvent, SupervisionListener
from .store import Store, open_store
from .tree import Child, Domain, Supervisor

__all__ = ["Installation", "Runtime", "get_runtime", "installation"]

_ATTR_INSTALL = "_prismatic_installation"
_ATTR_RUNTIME = "_prismatic_runtime"
_lock = threading.RLock()
_DISABLED = "disabled"


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
            settings.store_url, timeout_s=settings.store_timeout_s, retry_s=settings.store_retry_s
        )
        self.dispatcher = Dispatcher([LogListener(), *listeners])
        self.pid = os.getpid()
        # Set by the supervision engine: called with (task, exc) inside the task's process;
        # it may raise Celery's Retry to re-run the work, or return to let the crash stand.
        self.crash_handler: Callable[[Any, BaseException], None] | None = None
        self._routing_keys: dict[str, str] | None = None
        self.hostname: str | None = None  # the worker's node name, once it has started
        self.worker_domains: tuple[str, ...] = ()  # --domain options of this worker

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

    def emit(self, type_: str, **fields: Any) -> None:
        """Send a supervision event to every listener (failures isolated)."""
        self.dispatcher.emit(SupervisionEvent(type_, fields))


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
