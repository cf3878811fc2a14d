"""The worker's background services, one consumer bootstep each, started and stopped by Celery's blueprint.

* :class:`SupervisionStep`: the pause reconciler: a thread reads the pause records and recycle generations
  (one round trip per period, or at once when a broadcast wakes it), the event loop applies them; it also
  watches the prefork pool for deaths before acceptance.
* :class:`RegistrationStep`: the worker's registration and heartbeat in the store (withdrawn at shutdown).
* :class:`HealthSamplerStep`: publishes the worker's processes and memory (:mod:`..observability.sampler`).
* :class:`SheddingStep`: the backlog sampler, and the shedding guard in front of the consumer's task requests.
* :class:`StatsStep`: flushes the main process's outcome counters when the worker stops.

Store and broker I/O run in their own daemon threads, never on the worker's event loop. Nothing starts when a
module is imported: only these steps start services.
"""

from __future__ import annotations

import logging
import os
import time
import weakref

from celery import bootsteps
from celery.worker.consumer import Consumer

from ..admission.shedding.guard import ShedGuard, guard_requests
from ..admission.shedding.sampler import Sampler
from ..log import get_logger, log_event
from ..observability.sampler import HealthSampler
from ..observability.workers import Heartbeat, unregister_worker
from ..runtime import Runtime, get_runtime
from ..store import MemoryStore
from ..supervision.reconcile import Reconciler
from ..supervision.slots import watch_pool
from .state import WorkerState, ensure_worker_state
from .ticker import Ticker

__all__ = ["HealthSamplerStep", "RegistrationStep", "SheddingStep", "StatsStep", "SupervisionStep", "shed_guard"]

logger = get_logger("worker")
_shed_guards: weakref.WeakKeyDictionary[Runtime, ShedGuard | None] = weakref.WeakKeyDictionary()


def shed_guard(runtime: Runtime) -> ShedGuard | None:
    """The shedding guard of ``runtime`` in the worker's main process (None when shedding is off or no queue
    sheds); made on first call."""
    if runtime not in _shed_guards:
        policies = runtime.shedding.policies
        settings = runtime.settings
        _shed_guards[runtime] = ShedGuard(
            runtime.app, runtime.store, runtime.keys, policies, locator=runtime.locator, emit=runtime.emit,
            interval_s=settings.shed_interval_s, park_max=settings.shed_park_max,
        ) if settings.shed_enabled and policies else None
    return _shed_guards[runtime]


def consumed_queues(consumer: Consumer, state: WorkerState) -> tuple[str, ...]:
    """The queues the worker consumes when nothing is paused."""
    return state.consumed_queues or tuple(q.name for q in consumer.app.amqp.queues.consume_from.values())


class SupervisionStep(bootsteps.StartStopStep):
    """Keeps the queues consumed in line with the pause records (the reconciler and its timer)."""

    name = "prismatic.supervision"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Consumer, **kwargs: object) -> None:
        self.ticker: Ticker | None = None
        self.timer_entry: object = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Consumer) -> None:
        runtime = get_runtime(consumer.app)
        if runtime is None:
            return
        state = ensure_worker_state(consumer.app)
        state.hostname = consumer.hostname
        if state.reconciler is None:  # first start; a consumer restart keeps what was intended
            state.consumed_queues = tuple(consumer.app.amqp.queues.consume_from)
            state.reconciler = Reconciler(runtime.store, runtime.keys, runtime.supervisor, state.consumed_queues)
        reconciler = state.reconciler
        reconciler.feed = state.pause_feed

        # The consumer is the event loop's: a new snapshot is handed to it (the hub's call_soon is thread-safe),
        # and a timer applies it anyway (kombu before 5.7 wakes no idle loop for it; a worker without a hub).
        call_soon = getattr(getattr(consumer, "hub", None), "call_soon", None)

        def tick() -> float | None:
            snapshot = reconciler.poll()
            if callable(call_soon):
                call_soon(reconciler.apply, consumer)
            return snapshot.next_change_s()  # a pause that ends by expiry is read again as it ends

        interval_s = runtime.settings.reconcile_interval_s
        self.ticker = Ticker("prismatic-supervision", interval_s, tick, wake=reconciler.wake)
        self.ticker.start()
        timer = getattr(consumer, "timer")  # noqa: B009  (not in the stubs)
        every_s = interval_s if callable(call_soon) else min(0.1, interval_s / 2)
        self.timer_entry = timer.call_repeatedly(every_s, reconciler.apply, (consumer,), priority=10)
        if state.slots is not None:
            state.pool_watched = watch_pool(consumer.pool, state.slots) or state.pool_watched
            if state.pool_watched:  # a prefork pool: its processes mark the domains they serve in the slots
                reconciler.slots = state.slots

    def stop(self, consumer: Consumer) -> None:
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
        cancel = getattr(self.timer_entry, "cancel", None)
        if callable(cancel):
            cancel()
        self.timer_entry = None

    def shutdown(self, consumer: Consumer) -> None:
        self.stop(consumer)


class RegistrationStep(bootsteps.StartStopStep):
    """Registers the worker in the store, refreshes the registration every third of its TTL (its heartbeat) and
    at once when what it serves changed, and withdraws it at shutdown."""

    name = "prismatic.registration"
    requires = (SupervisionStep,)

    def __init__(self, consumer: Consumer, **kwargs: object) -> None:
        self.runtime: Runtime | None = None
        self.ticker: Ticker | None = None
        self.started_at = time.time()
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Consumer) -> None:
        self.runtime = runtime = get_runtime(consumer.app)
        if runtime is None:
            return
        state = ensure_worker_state(consumer.app)
        heartbeat = Heartbeat(runtime.store, runtime.keys, runtime.settings)

        def beat() -> None:
            heartbeat.beat(self._registration(consumer, state))

        self.ticker = Ticker("prismatic-registration", runtime.settings.reconcile_interval_s, beat)
        self.ticker.start()

    def _registration(self, consumer: Consumer, state: WorkerState) -> dict[str, object]:
        pool = consumer.pool
        return {
            "hostname": consumer.hostname,
            "pid": os.getpid(),
            "pool": type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else None,
            "concurrency": getattr(pool, "limit", None),
            "domains": list(state.domains),
            # what the worker serves: its queues when nothing is paused (a paused queue is served, only held)
            "queues": sorted(consumed_queues(consumer, state)),
            "pool_watched": state.pool_watched,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
        }

    def stop(self, consumer: Consumer) -> None:
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None

    def shutdown(self, consumer: Consumer) -> None:
        self.stop(consumer)
        if self.runtime is not None:
            unregister_worker(self.runtime.store, self.runtime.keys, consumer.hostname)


class HealthSamplerStep(bootsteps.StartStopStep):
    """Publishes the worker's processes and memory per domain for the cluster's health report."""

    name = "prismatic.health"
    requires = (SupervisionStep,)

    def __init__(self, consumer: Consumer, **kwargs: object) -> None:
        self.sampler: HealthSampler | None = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Consumer) -> None:
        runtime = get_runtime(consumer.app)
        if runtime is None or self.sampler is not None:
            return
        state = ensure_worker_state(consumer.app)
        reconciler = state.reconciler
        self.sampler = HealthSampler(runtime.store, runtime.keys, runtime.supervisor, consumer,
                                     served=(lambda: reconciler.served_pids) if reconciler is not None else None,
                                     reconcile_interval_s=runtime.settings.reconcile_interval_s)
        self.sampler.start()

    def stop(self, consumer: Consumer) -> None:
        """Kept across a consumer restart (the connection came back): the sample is the worker's, not the
        connection's."""

    def shutdown(self, consumer: Consumer) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None


class SheddingStep(bootsteps.StartStopStep):
    """Samples the backlog of the supervised queues this worker consumes, once per ``prismatic_shed_interval_s``
    (a shedding queue's every 20 ms while messages it could shed arrive), and puts the shedding guard in front of
    the consumer's task requests.

    Broker and store I/O run in the ``prismatic-shedding`` thread, never on the
    worker's event loop. Off when ``prismatic_shed_enabled`` is False or the
    store is in-process (``memory://``): shedding needs state every worker shares.
    """

    name = "prismatic.shedding"
    requires = (SupervisionStep,)

    def __init__(self, consumer: Consumer, **kwargs: object) -> None:
        self.sampler: Sampler | None = None
        self.ticker: Ticker | None = None
        runtime = get_runtime(consumer.app)
        guard = shed_guard(runtime) if runtime is not None else None
        if guard is not None:
            guard_requests(consumer, guard)  # before the consumer builds its strategies
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Consumer) -> None:
        runtime = get_runtime(consumer.app)
        if runtime is None or not runtime.settings.shed_enabled or not runtime.supervisor.queues:
            return
        if isinstance(runtime.store, MemoryStore):
            log_event(logging.INFO, "shedding-disabled", logger,
                      reason="the store is in-process (memory://); shedding needs a Redis store")
            return
        consumed = set(consumed_queues(consumer, ensure_worker_state(consumer.app)))
        queues = [q for q in runtime.supervisor.queues if q in consumed]
        if not queues:
            return
        guard = shed_guard(runtime)
        self.sampler = Sampler(consumer.app, runtime.store, runtime.keys, queues, runtime.shedding.policies,
                               name=str(consumer.hostname), interval_s=runtime.settings.shed_interval_s,
                               guard=guard)
        self.ticker = Ticker("prismatic-shedding", runtime.settings.shed_interval_s, self.sampler.tick)
        if guard is not None:
            guard.wake = self.ticker.wake.set  # a candidate with no fresh read asks for one at once
        self.ticker.start()

    def stop(self, consumer: Consumer) -> None:
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
        if self.sampler is not None:
            if self.sampler.guard is not None:
                self.sampler.guard.wake = None
            self.sampler.close()
            self.sampler = None

    def shutdown(self, consumer: Consumer) -> None:
        self.stop(consumer)


class StatsStep(bootsteps.StartStopStep):
    """Flushes the main process's outcome counters and execution windows when the worker shuts down (pool
    processes flush their own on ``worker_process_shutdown``; each process's flusher thread starts with its
    first count)."""

    name = "prismatic.stats"
    requires = (SupervisionStep,)

    def shutdown(self, consumer: Consumer) -> None:
        runtime = get_runtime(consumer.app)
        if runtime is None:
            return
        try:
            runtime.stats.flush_all()
        except Exception as exc:  # shutting down: the counters of the last period are lost, nothing else
            log_event(logging.ERROR, "stats-flush-failed", logger, error=repr(exc)[:300])
