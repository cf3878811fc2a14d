"""Worker bootsteps: validate at boot, select a domain's queues, run the supervision timer.

``DomainStep`` (worker blueprint) runs while the worker is built: bad settings
stop the worker there, naming the setting; ``--domain NAME`` narrows the
queues consumed to that domain's. ``SupervisionStep`` (consumer blueprint)
keeps the worker's registration alive from a background thread: store I/O
never runs on the worker's event loop.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import click
from celery import Celery, bootsteps

from ..errors import ConfigurationError
from ..log import get_logger, log_event
from ..observability.workers import index_every_s, register_worker, unregister_worker
from ..runtime import Runtime, get_runtime
from ..supervision.reconcile import Reconciler
from ..supervision.slots import RunningSlots, watch_pool

__all__ = ["DOMAIN_OPTION", "DomainStep", "SupervisionStep", "Ticker"]

logger = get_logger("worker")

DOMAIN_OPTION = click.Option(
    ["--domain"],
    multiple=True,
    help="prismatic-celery: consume only the queues of this supervision domain (repeatable).",
)


def _selected_queues(runtime: Runtime, domains: tuple[str, ...]) -> list[str]:
    """The queues of ``domains``; an unknown one stops ``celery worker`` with one line and exit code 1."""
    queues: list[str] = []
    for name in domains:
        try:
            queues.extend(runtime.supervisor.domain(name).queues)
        except KeyError as exc:
            raise click.ClickException(str(ConfigurationError("--domain", str(exc.args[0])))) from None
    return queues


class DomainStep(bootsteps.Step):
    """Validates the configuration at boot and applies ``--domain``."""

    name = "prismatic.domain"

    def __init__(self, worker: Any, domain: tuple[str, ...] | list[str] | str | None = None, **kwargs: Any) -> None:
        try:
            runtime = get_runtime(worker.app)
        except ConfigurationError as exc:  # the worker does not start: one line naming the setting, exit 1
            raise click.ClickException(f"prismatic-celery: invalid configuration: {exc}") from None
        if runtime is None:
            return
        domains = (domain,) if isinstance(domain, str) else tuple(domain or ())
        declared = worker.app.amqp.queues
        for queue in runtime.supervisor.queues:
            if queue in declared:
                continue
            if declared._consume_from is None:  # no -Q: supervised queues are consumed by default
                declared.select_add(queue)
            else:  # -Q chose the queues: declare ours without consuming them
                declared.add(queue)
        if domains:
            worker.app.amqp.queues.select(_selected_queues(runtime, domains))
        runtime.worker_domains = domains
        _check_task_circuits(worker.app, runtime)
        _warn_unsupervised_routes(worker.app, runtime)
        worker.pool_restarts = True  # per-process shutdown events: recycling a pool process needs them
        if runtime.slots is None:
            runtime.slots = RunningSlots()  # before the pool forks: its processes share it
        super().__init__(worker, **kwargs)


def _check_task_circuits(app: Celery, runtime: Runtime) -> None:
    """Every circuit a task depends on (``circuits=[...]`` option) must be declared."""
    for name, task in list(app.tasks.items()):
        wanted = getattr(task, "circuits", None)
        if not wanted:
            continue
        if isinstance(wanted, str) or not isinstance(wanted, (list, tuple)):
            raise ConfigurationError(f"{name}.circuits", f"expected a list of circuit names, got {wanted!r}")
        for circuit in wanted:
            if circuit not in runtime.circuits:
                known = ", ".join(runtime.circuits.names) or "none declared"
                raise ConfigurationError(f"{name}.circuits", f"unknown circuit {circuit!r}; prismatic_circuits "
                                                             f"declares: {known}")


def unsupervised_routes(app: Celery, runtime: Runtime) -> list[str]:
    """Tasks routed to a queue no domain declares although they look meant to be supervised: the queue's name
    is close to a supervised queue's (a typo), or a child's ``tasks`` globs name the task. Each as
    ``task -> queue (...)``."""
    supervised = list(runtime.supervisor.queues)
    found: list[str] = []
    for name, task in sorted(app.tasks.items()):
        if name.startswith("celery.") or not getattr(task, "supervise", True):
            continue
        own = getattr(task, "queue", None)
        try:
            routed = app.amqp.router.route({"queue": own} if own else {}, name).get("queue")
        except Exception:  # a route Celery itself cannot resolve is Celery's to report
            continue
        queue = getattr(routed, "name", routed)
        if not isinstance(queue, str) or queue in supervised:
            continue
        meant = runtime.supervisor.route(name)
        close = difflib.get_close_matches(queue, supervised, n=1, cutoff=0.75)
        if meant is not None:
            found.append(f"{name} -> {queue} (its child's tasks globs name {meant})")
        elif close:
            found.append(f"{name} -> {queue} (did you mean {close[0]}?)")
    return found


def _warn_unsupervised_routes(app: Celery, runtime: Runtime) -> None:
    """One warning at worker start naming the supervised-looking routes to queues no domain declares."""
    found = unsupervised_routes(app, runtime)
    if found:
        log_event(logging.WARNING, "unsupervised-routes", logger, routes="; ".join(found)[:1000],
                  detail="these tasks run unsupervised: no domain declares their queue")


class Ticker:
    """A daemon thread calling ``tick`` every ``interval_s`` (or as soon as ``wake`` is set) until stopped.

    ``tick`` may return a shorter wait (seconds) before its next call.
    """

    def __init__(
        self, name: str, interval_s: float, tick: Callable[[], float | None], *, wake: threading.Event | None = None
    ) -> None:
        self.interval_s = interval_s
        self.tick = tick
        self.wake = wake or threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start ticking (first tick at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current tick."""
        self._stop.set()
        self.wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.interval_s
            try:
                sooner = self.tick()
                if sooner is not None:
                    wait = max(0.01, min(wait, sooner))
            except Exception as exc:  # a failing tick is logged; the next one runs anyway
                log_event(logging.ERROR, "tick-failed", logger, thread=self._thread.name, error=repr(exc)[:300])
            self.wake.wait(wait)
            self.wake.clear()


class SupervisionStep(bootsteps.StartStopStep):
    """Registers the worker in the store and keeps the registration fresh."""

    name = "prismatic.supervision"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.runtime: Runtime | None = None
        self.ticker: Ticker | None = None
        self.timer_entry: Any = None
        self.started_at = time.time()
        self.pool_watched = False  # deaths of pool processes before their job was accepted are counted
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Any) -> None:
        app: Celery = consumer.app
        self.runtime = runtime = get_runtime(app)
        if runtime is None:
            return
        hostname = consumer.hostname
        runtime.hostname = hostname
        if runtime.reconciler is None:  # first start; a consumer restart keeps what was intended
            runtime.consumed_queues = tuple(app.amqp.queues.consume_from)
            runtime.reconciler = Reconciler(runtime, runtime.consumed_queues)
        reconciler = runtime.reconciler
        last_beat, last_index = [0.0], [-1e9]

        def tick() -> float | None:
            snapshot = reconciler.poll()
            if time.monotonic() - last_beat[0] >= runtime.settings.reconcile_interval_s:
                last_beat[0] = time.monotonic()
                index = last_beat[0] - last_index[0] >= index_every_s(runtime.settings)
                last_index[0] = last_beat[0] if index else last_index[0]
                register_worker(runtime.store, runtime.keys, runtime.settings,
                                self._registration(consumer, runtime), index=index)
            return snapshot.next_change_s()  # a pause that ends by expiry is read again as it ends

        self.ticker = Ticker("prismatic-supervision", runtime.settings.reconcile_interval_s, tick,
                             wake=reconciler.wake)
        self.ticker.start()
        apply_every = min(0.1, runtime.settings.reconcile_interval_s / 2)
        self.timer_entry = consumer.timer.call_repeatedly(apply_every, reconciler.apply, (consumer,), priority=10)
        if runtime.slots is not None:
            self.pool_watched = watch_pool(consumer.pool, runtime.slots) or self.pool_watched

    def _registration(self, consumer: Any, runtime: Runtime) -> dict[str, Any]:
        pool = consumer.pool
        return {
            "hostname": consumer.hostname,
            "pid": os.getpid(),
            "pool": type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else None,
            "concurrency": getattr(pool, "limit", None),
            "domains": list(getattr(runtime, "worker_domains", ())),
            # what the worker serves: its queues when nothing is paused (a paused queue is served, only held)
            "queues": sorted(runtime.consumed_queues
                             or (q.name for q in consumer.app.amqp.queues.consume_from.values())),
            "pool_watched": self.pool_watched,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
        }

    def stop(self, consumer: Any) -> None:
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)
        runtime = self.runtime
        if runtime is not None:
            unregister_worker(runtime.store, runtime.keys, consumer.hostname)
