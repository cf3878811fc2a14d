"""The shedding guard: in the worker's main process, shed a message before it reaches the pool.

The guard wraps the consumer's ``on_task_request`` (what Celery calls with each
request it is about to execute, after ETA and rate limits): a low-importance
message on a shedding queue is parked (or dropped), acknowledged and never
sent to a pool process. Shedding a message so costs one store round trip, no
pool round trip, and no exception in the pool (Celery's ``Ignore`` path copies
the traceback's code positions into a result of tens of kilobytes per message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from celery import Celery
from celery.worker.state import task_ready

from ...log import RateLimitedWarning, get_logger, log_event
from .config import QueuePolicy
from .estimate import BacklogEstimate
from .park import park, park_record, totals_key
from .priority import HEADER, PRIORITY_HEADER, REPLAYED_HEADER, broker_consumes_higher_first, importance_of
from .state import ShedView

if TYPE_CHECKING:
    from celery.app.task import Context
    from celery.worker.consumer import Consumer
    from celery.worker.request import Request

    from ...store import Store
    from ...store.keys import Keys
    from ...supervision.locate import AnyTask, Located, Locator
    from ...supervision.ports import Emit

__all__ = ["STALE_AFTER_S", "ShedGuard", "guard_requests"]

logger = get_logger("shedding")
_GUARDED = "_prismatic_shed_guarded"
STALE_AFTER_S = 0.1
"""A backlog read longer ago decides nothing (while a queue sheds its sampler reads it every 20 ms): without a
fresher one, nothing is shed."""
#: Routes remembered (queue, routing key, task, header, priority) before the memo starts again.
ROUTES_MAX = 4096
#: A route's domain and child, importance, and whether it is spared (never shed).
Route = tuple["Located | None", "int | None", bool]


class ShedGuard:
    """Parks (or drops) a low-importance message about to run on a queue in shedding state.

    Costs a dictionary check per message while no queue is near shedding. The
    shedding state (shared by every worker, with hysteresis) is read from the
    store at most once per ``prismatic_shed_interval_s``, and at once when this
    worker's sampler publishes a change. A message is shed only while the backlog
    estimated at that moment (:mod:`.estimate`: this worker's last read, at most
    ``STALE_AFTER_S`` old, minus what it received since) is at or above the
    queue's resume mark. A message that cannot be parked safely (arguments that
    are not JSON, Redis unreachable) runs instead: shedding never loses work in
    ``park`` mode.
    """

    def __init__(self, app: Celery, store: Store, keys: Keys, policies: Mapping[str, QueuePolicy], *,
                 locator: Locator, emit: Emit, interval_s: float, park_max: int) -> None:
        self.app, self.store, self.keys, self.locator, self.emit = app, store, keys, locator, emit
        self.park_max = park_max
        self.policies = dict(policies)
        self.view = ShedView(store, keys, tuple(self.policies), max_age_s=interval_s)
        self.backlogs = BacklogEstimate({q: p.resume_below for q, p in self.policies.items()},
                                        max_age_s=STALE_AFTER_S)
        self._higher_first: bool | None = None
        self._unparkable = RateLimitedWarning()
        self._routes: dict[tuple[object, ...], Route] = {}
        self.candidates = 0
        """Messages seen that a shedding queue could shed (importance below its cut-off): the sampler follows
        a shedding queue closely only while they arrive."""
        self.wake: Callable[[], None] | None = None
        """Asks this process's sampler for a read now (set by the worker's shedding step)."""

    @property
    def higher_first(self) -> bool:
        """True when the broker consumes higher priorities first (read once)."""
        if self._higher_first is None:
            self._higher_first = broker_consumes_higher_first(self.app)
        return self._higher_first

    def admit(self, request: Request) -> bool:
        """True when the worker's ``request`` should run; False when it was shed (parked or dropped,
        and acknowledged)."""
        if not self.policies:
            return True
        info = request.request_dict  # the message's headers, flat (custom ones included)
        if PRIORITY_HEADER not in info:  # no producer marked its priority: nor may a re-publish of it (a retry,
            info[PRIORITY_HEADER] = None  # a deferral) turn the delivered one, maybe kombu's default, into one
        states = self.view.current()
        if not states and not self.backlogs.counting:
            return True  # no queue sheds or is near it (a few dictionary checks per message)
        header, priority = info.get(HEADER), info.get(PRIORITY_HEADER)
        located, importance, spared = self._route(request, header, priority)
        if located is None:
            return True
        domain, child = located
        self.backlogs.received(child.queue)
        if spared:  # no policy for its queue, or an importance at or above the cut-off: never shed
            return True
        policy = self.policies[child.queue]
        state = states.get(child.queue)
        if state is None or info.get(REPLAYED_HEADER):
            return True
        task = request.task
        self.candidates += 1
        backlog = self.backlogs.estimate(child.queue)
        if backlog is None:  # no fresh read: this one runs, and the sampler reads the queue now
            if self.wake is not None:
                self.wake()
            return True
        if backlog < policy.resume_below:
            return True  # below the resume mark now: the sampler's next read stops the state
        # the Context the task would see as ``task.request`` (private: not in the stubs)
        context: Context = getattr(request, "_context")  # noqa: B009
        fields: dict[str, object] = {
            "domain": domain.name, "queue": child.queue, "task": task.name, "task_id": request.id,
            "backlog": backlog, "threshold": state.threshold, "importance": importance,
            "cutoff": policy.cutoff, "mode": policy.mode, "hostname": request.hostname or "",
        }
        if policy.mode == "park" and not self._park(task, context, policy, fields):
            return True
        if policy.mode == "drop":
            self.store.hincr(totals_key(self.keys), {f"{child.queue}:dropped": 1})
        self.emit("shed", **fields)
        task_ready(request)
        request.acknowledge()
        return False

    def _route(self, request: Request, header: object, priority: object) -> Route:
        """The domain and child of ``request``'s delivery, its importance and whether it is spared (its queue has
        no policy, or its importance is at or above the cut-off), worked out once per queue, routing key, task,
        header and priority (main thread)."""
        delivery = request.delivery_info if isinstance(request.delivery_info, dict) else {}
        key = (delivery.get("queue"), delivery.get("routing_key"), request.task_name, header, priority)
        try:
            return self._routes[key]
        except KeyError:
            memo = True
        except TypeError:  # a value that is no scalar: worked out for this message alone
            memo = False
        task = request.task
        located = self.locator.locate(delivery, task.name)
        importance = importance_of(task, (header,), priority, higher_first=self.higher_first)
        policy = self.policies.get(located[1].queue) if located is not None else None
        found = (located, importance, policy is None or importance is None or importance >= policy.cutoff)
        if memo:
            if len(self._routes) >= ROUTES_MAX:
                self._routes.clear()
            self._routes[key] = found
        return found

    def published(self, shedding: Mapping[str, bool]) -> None:
        """This worker's sampler left the queues of ``shedding`` in that state: read the store again now
        when the view disagrees (sampler thread)."""
        held = self.view.current()
        if any(on != (queue in held) for queue, on in shedding.items()):
            self.view.refresh()

    def _park(self, task: AnyTask, context: Context, policy: QueuePolicy, fields: dict[str, object]) -> bool:
        record = park_record(task, policy.queue, request=context, importance=fields["importance"],
                             backlog=fields["backlog"], threshold=fields["threshold"], hostname=fields["hostname"],
                             parked_at=time.time())
        if record is None:
            self._unparkable.warn("shed-unparkable", queue=policy.queue, task=task.name, task_id=fields["task_id"],
                                  reason="arguments are not JSON; the message runs instead")
            return False
        outcome = park(self.store, self.keys, policy.queue, record, cap=self.park_max)
        if not outcome.durable:
            self._unparkable.warn("shed-unparkable", queue=policy.queue, task=task.name, task_id=fields["task_id"],
                                  reason="store unavailable; the message runs instead")
            return False
        fields["parked"] = outcome.length
        return True


def guard_requests(consumer: Consumer, guard: ShedGuard) -> bool:
    """Put ``guard`` in front of the consumer's ``on_task_request`` (once); False when already there.

    Called before the consumer builds its task strategies, which keep a
    reference to ``on_task_request``.
    """
    original: Callable[[Request], object] | None = getattr(consumer, "on_task_request", None)
    if original is None or getattr(original, _GUARDED, False):
        return False

    def on_task_request(request: Request) -> object:
        try:
            admitted = guard.admit(request)
        except Exception as exc:  # shedding must never lose or fail a message: run it
            log_event(logging.ERROR, "shed-guard-failed", logger, task=getattr(request, "task_name", "?"),
                      error=repr(exc)[:300])
            admitted = True
        return original(request) if admitted else None

    setattr(on_task_request, _GUARDED, True)
    setattr(consumer, "on_task_request", on_task_request)
    return True
