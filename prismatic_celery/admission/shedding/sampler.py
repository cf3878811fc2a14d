"""The backlog sampler: once per period (every 20 ms while a queue sheds and messages it could shed arrive),
never per message, in a background thread of each worker.

Redis transport: one pipeline of ``LLEN`` over every priority sub-queue of
every sampled queue (``name`` and ``name\\x06\\x16<step>`` for kombu's priority
steps 3, 6 and 9; separator and steps are read from the channel, so transport
options that change them are honoured). RabbitMQ and other transports: a
passive ``queue_declare`` per queue (``message_count``, ready messages only).
Then one Lua script publishes the sample and moves the shedding state.
The cost per period is fixed by the number of queues: it does not depend on
how many tasks run. While a queue sheds, the reads of that queue between two
periods cost one probe each and no store command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery

from ...log import RateLimitedWarning, get_logger, log_event
from .config import QueuePolicy
from .state import Transition, publish_sample

if TYPE_CHECKING:
    from ...store import Store
    from ...store.keys import Keys
    from .guard import ShedGuard

__all__ = ["SHEDDING_PERIOD_S", "BrokerBacklog", "Sampler", "redis_subqueues"]

logger = get_logger("shedding")
QUIET_PUBLISH_S = 5.0  # how stale the published backlog may get while every queue is far below its threshold
SHEDDING_PERIOD_S = 0.02
"""While a queue sheds, its backlog is read this often (at most: never more often than once per period)."""


def redis_subqueues(queue: str, *, sep: str, steps: Sequence[int]) -> list[str]:
    """The Redis lists kombu keeps for ``queue``: one per priority step (step 0 is the bare name)."""
    return [f"{queue}{sep}{step}" if step else queue for step in steps]


class BrokerBacklog:
    """Reads queue backlogs through its own broker connection (not the consumer's: another thread)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._connection: Any = None
        self._channel: Any = None
        self.commands = 0
        """Broker commands issued so far (LLEN or queue.declare), for measurements."""

    def sample(self, queues: Sequence[str]) -> dict[str, int]:
        """The backlog of each queue (messages waiting, all priorities)."""
        if not queues:
            return {}
        try:
            if self._connection is None:
                self._connection = self.app.connection_for_read()
                self._connection.ensure_connection(max_retries=1)
            if self._connection.transport.driver_type == "redis":
                return self._redis(queues)
            return self._passive(queues)
        except Exception:
            self.close()
            raise

    def _redis(self, queues: Sequence[str]) -> dict[str, int]:
        channel = self._connection.default_channel
        names = {q: redis_subqueues(q, sep=channel.sep, steps=channel.priority_steps) for q in queues}
        with channel.client.pipeline(transaction=False) as pipe:
            for subqueues in names.values():
                for name in subqueues:
                    pipe.llen(name)
            sizes = pipe.execute()
        self.commands += len(sizes)
        backlogs: dict[str, int] = {}
        index = 0
        for queue, subqueues in names.items():
            backlogs[queue] = sum(int(s) for s in sizes[index:index + len(subqueues)] if isinstance(s, int))
            index += len(subqueues)
        return backlogs

    def _passive(self, queues: Sequence[str]) -> dict[str, int]:
        backlogs: dict[str, int] = {}
        for queue in queues:
            if self._channel is None:
                self._channel = self._connection.channel()
            self.commands += 1
            try:
                backlogs[queue] = int(self._channel.queue_declare(queue=queue, passive=True).message_count)
            except self._connection.channel_errors:  # not declared yet: nothing waits in it
                backlogs[queue] = 0
                self._channel = None  # the broker closed the channel (AMQP 404)
        return backlogs

    def close(self) -> None:
        """Release the connection (the next sample reconnects)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception as exc:  # closing a broken connection is not worth more than a debug line
                log_event(logging.DEBUG, "shed-sampler-close-failed", logger, error=repr(exc)[:200])


class Sampler:
    """One worker's sampler: read backlogs, publish them, log the transitions.

    Once per ``prismatic_shed_interval_s`` it reads every queue and publishes
    the sample when it could move the shared state (with hysteresis), else only
    often enough to keep that state and the backlog hash fresh. While one of its
    queues sheds, it also reads the shedding queues every ``SHEDDING_PERIOD_S``
    for the guard of its process, and publishes at once when one has fallen
    below its resume mark, so shedding stops for every worker.

    ``guard`` is the shedding guard of the same process: it gets every sample at
    once (its backlog estimate) and every state this sampler publishes (its view).
    """

    def __init__(
        self, app: Celery, store: Store, keys: Keys, queues: Sequence[str], policies: Mapping[str, QueuePolicy], *,
        name: str, interval_s: float, probe: BrokerBacklog | None = None, guard: ShedGuard | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.keys = store, keys
        self.guard = guard
        self.queues = tuple(q for q in queues if q in policies)
        self.policies = dict(policies)
        self.name = name
        self.probe = probe or BrokerBacklog(app)
        self.clock = clock
        self.interval_s = interval_s
        self.follow_s = min(SHEDDING_PERIOD_S, self.interval_s)
        self.ttl_s = max(5.0, 5 * self.interval_s)
        self.samples = 0
        self.published = 0
        self._failed = RateLimitedWarning()
        self._shedding: set[str] = set()
        self._sampled_at = -float("inf")
        self._published_at = -float("inf")
        self._active_at = -float("inf")  # when a queue last started shedding or the guard last saw a candidate
        self._candidates = 0

    def tick(self) -> float | None:
        """The sampler thread's call: a full sample once per period, else a read of the shedding queues;
        the wait before the next call while a queue sheds and is active.

        Active: it started shedding, or the guard saw a message it could shed, within the last period. A shedding
        queue whose messages are all above the cut-off (or carry no producer priority) is read once per period
        only: reading it every 20 ms would cost CPU for nothing. The first candidate after such a quiet spell
        finds no fresh read, runs, and wakes the sampler (``ShedGuard.wake``), which then follows again."""
        if self.clock() - self._sampled_at >= self.interval_s:
            self.sample()
        else:
            self.follow()
        return self.follow_s if self._shedding and self._active() else None

    def _active(self) -> bool:
        seen = self.guard.candidates if self.guard is not None else None
        if seen is None or seen != self._candidates:
            self._candidates = seen or 0
            self._active_at = self.clock()
        return self.clock() - self._active_at < self.interval_s

    def sample(self) -> list[Transition]:
        """Sample every queue once, publish the sample and log the state changes."""
        self._sampled_at = self.clock()
        backlogs = self._read(self.queues)
        if backlogs is None or self._quiet(backlogs):
            return []
        return self._publish(backlogs)

    def follow(self) -> list[Transition]:
        """Read the shedding queues for the guard; publish at once when one fell below its resume mark."""
        queues = [q for q in self.queues if q in self._shedding]
        backlogs = self._read(queues) if queues else None
        if not backlogs or all(backlog >= self.policies[q].resume_below for q, backlog in backlogs.items()):
            return []
        return self._publish(backlogs)

    def _read(self, queues: Sequence[str]) -> dict[str, int] | None:
        guard = self.guard
        receipts = guard.backlogs.receipts() if guard is not None else {}
        try:
            backlogs = self.probe.sample(queues)
        except Exception as exc:
            self._failed.warn("shed-sample-failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        self.samples += 1
        if guard is not None:
            guard.backlogs.observe(backlogs, receipts)
        return backlogs

    def _publish(self, backlogs: Mapping[str, int]) -> list[Transition]:
        transitions = publish_sample(self.store, self.keys, backlogs, self.policies,
                                     ttl_s=self.ttl_s, sampler=self.name)
        self.published += 1
        self._published_at = self.clock()
        if self.guard is not None:
            self.guard.published({moved.queue: moved.shedding for moved in transitions})
        for moved in transitions:
            if moved.shedding:
                if moved.queue not in self._shedding:
                    self._active_at = self.clock()
                self._shedding.add(moved.queue)
            else:
                self._shedding.discard(moved.queue)
            if moved.started or moved.stopped:
                policy = self.policies[moved.queue]
                log_event(logging.WARNING, "shedding-started" if moved.started else "shedding-stopped", logger,
                          queue=moved.queue, backlog=moved.backlog, threshold=policy.threshold,
                          resume_below=policy.resume_below, cutoff=policy.cutoff, mode=policy.mode, by=self.name)
        return transitions

    def _quiet(self, backlogs: Mapping[str, int]) -> bool:
        """True when publishing can wait: the sample moves no state and the last publish is recent.

        No state moves when every queue this sampler saw shedding is still at or above its resume mark and every
        other queue is below it. Recent: within ``QUIET_PUBLISH_S`` while nothing sheds (the backlog hash is
        refreshed that often for the dashboards), within a third of the state's TTL while a queue sheds (its state
        outlives two missed refreshes). A quiet worker costs no store command per period, nor does a shedding
        one between refreshes."""
        quiet_s = self.ttl_s / 3 if self._shedding else QUIET_PUBLISH_S
        if self.clock() - self._published_at >= quiet_s:
            return False
        return all((backlog >= self.policies[queue].resume_below) == (queue in self._shedding)
                   for queue, backlog in backlogs.items())

    def close(self) -> None:
        """Release the broker connection."""
        self.probe.close()
