"""The worker bootstep that runs the backlog sampler in a background thread and installs the shedding guard."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from ...log import get_logger, log_event
from ...runtime import Runtime, get_runtime
from ...store import MemoryStore
from ...worker.bootsteps import SupervisionStep, Ticker
from .config import queue_policies
from .guard import guard_requests
from .sampler import Sampler

__all__ = ["SheddingStep"]

logger = get_logger("shedding")


class SheddingStep(bootsteps.StartStopStep):
    """Samples the backlog of the supervised queues this worker consumes, once per ``prismatic_shed_interval_s``
    (and a shedding queue's every 20 ms), and puts the shedding guard in front of the consumer's task requests.

    Broker and store I/O run in the ``prismatic-shedding`` thread, never on the
    worker's event loop. Off when ``prismatic_shed_enabled`` is False or the
    store is in-process (``memory://``): shedding needs state every worker shares.
    """

    name = "prismatic.shedding"
    requires = (SupervisionStep,)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.sampler: Sampler | None = None
        self.ticker: Ticker | None = None
        runtime = get_runtime(consumer.app)
        if runtime is not None and runtime.shed_guard is not None:
            guard_requests(consumer, runtime.shed_guard)  # before the consumer builds its strategies
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Any) -> None:
        runtime = get_runtime(consumer.app)
        if runtime is None or not runtime.settings.shed_enabled or not runtime.supervisor.queues:
            return
        if isinstance(runtime.store, MemoryStore):
            log_event(logging.INFO, "shedding-disabled", logger,
                      reason="the store is in-process (memory://); shedding needs a Redis store")
            return
        queues = self._queues(consumer, runtime)
        if not queues:
            return
        guard = runtime.shed_guard
        self.sampler = Sampler(runtime, queues, queue_policies(runtime.settings, runtime.supervisor),
                               name=str(consumer.hostname), guard=guard)
        self.ticker = Ticker("prismatic-shedding", runtime.settings.shed_interval_s, self.sampler.tick)
        self.ticker.start()

    @staticmethod
    def _queues(consumer: Any, runtime: Runtime) -> list[str]:
        consumed = set(runtime.consumed_queues or ()) or {
            q.name for q in consumer.app.amqp.queues.consume_from.values()
        }
        return [q for q in runtime.supervisor.queues if q in consumed]

    def stop(self, consumer: Any) -> None:
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)
