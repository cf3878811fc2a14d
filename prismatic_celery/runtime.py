"""The per-app runtime, the composition root: built once per process from the settings, it builds every component
and hands each only what it needs (the worker layer, the CLI and the operator views then use it)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from celery import Celery

from .admission.bulkhead import BulkheadGuard
from .admission.shedding import ShedStatus, queue_policies
from .circuits import Circuits
from .config import Settings, load_settings
from .lessons.learning import Learning
from .log import get_logger, log_event
from .observability.events import (
    CeleryEventListener,
    Dispatcher,
    LogListener,
    StreamListener,
    SupervisionEvent,
    SupervisionListener,
)
from .observability.observer import Observer, TaskStats
from .remediation import RemediationRegistry
from .remediation.dlq import DeadLetterQueue
from .store import Store, open_store
from .store.keys import Keys
from .supervision.engine import Engine
from .supervision.locate import Locator
from .supervision.tree import Supervisor

__all__ = ["Installation", "Runtime", "get_runtime", "installation"]

logger = get_logger("runtime")

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
    """The composition root of one app in this process: builds every component and hands each what it needs.

    Components never receive the runtime. Its attributes ``store``, ``keys``, ``settings``, ``supervisor``,
    ``circuits``, ``learning``, ``dlq``, ``registry`` and ``shedding`` are what the operator views read.
    """

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
        self.locator = Locator(self.supervisor, self._declared_queues)
        self.stats = TaskStats(self.store, self.keys, window_s=settings.child_window_s,
                               flush_s=settings.stats_flush_s)
        self.observer = Observer(self.stats, self.locator)
        self.circuits = Circuits(self.store, self.keys, self.dispatcher, specs=settings.circuits,
                                 cache_ttl_s=settings.circuit_cache_s)
        self.registry = RemediationRegistry(settings.remediation_rules or (),
                                            defaults=None if settings.default_rules else ())
        self.dlq = DeadLetterQueue(self.store, self.keys, settings.dlq_max)
        self.learning: Learning | None = (Learning(self.store, self.keys, settings, self.circuits)
                                          if settings.lessons else None)
        self.engine = Engine(
            store=self.store, keys=self.keys, supervisor=self.supervisor, settings=settings, circuits=self.circuits,
            registry=self.registry, dlq=self.dlq, learning=self.learning, locator=self.locator, emit=self.emit,
            broadcast_reconcile=self._broadcast, pending_successes=self.stats.take_successes,
        )
        policies = queue_policies(settings, self.supervisor)  # validates the shedding settings
        self.shedding = ShedStatus(self.store, self.keys, self.supervisor, policies)
        bulkhead = BulkheadGuard(self.store, self.keys, self.supervisor, self.locator,
                                 lease_s=settings.bulkhead_lease_s, defer_s=settings.bulkhead_defer_s)
        self.bulkhead: BulkheadGuard | None = bulkhead if bulkhead.active else None

    def _declared_queues(self) -> Mapping[str, object]:
        return self.app.amqp.queues

    def emit(self, type_: str, /, **fields: object) -> None:
        """Send a supervision event to every listener (failures isolated).

        ``recorded`` says the event is already in the store's event stream (the
        restart script writes its own entries in the same round trip).
        """
        recorded = bool(fields.pop("recorded", False))
        self.dispatcher.emit(SupervisionEvent(type_, fields, recorded=recorded))

    def _broadcast(self, *, pause: list[str]) -> None:
        self.broadcast_reconcile(pause=pause)  # looked up at each call: tests replace it

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
