"""Load shedding: above a queue's backlog threshold, low-importance messages are parked or dropped.

* :mod:`.sampler` (run by the worker's ``SheddingStep``): each worker samples its supervised queues'
  backlogs once per period in a background thread and publishes the shedding
  state (with hysteresis) in the store.
* :mod:`.guard`: in the worker's main process, before a message goes to the
  pool, a message below the importance cut-off on a shedding queue is parked
  (default) or dropped and acknowledged, with a ``supervision-shed`` WARNING
  line and event.
* :mod:`.park`: the parked lists, replay (exactly once) and purge.
* :mod:`.estimate`: the backlog at the moment of a decision (last sample, corrected).
* :mod:`.priority`: the importance rule, and the mark a producer puts on the priority it set.
"""

from __future__ import annotations

from .config import MODES, QueuePolicy, queue_policies
from .estimate import BacklogEstimate
from .guard import ShedGuard, guard_requests
from .park import ParkOutcome, ReplayReport, park, parked_key, peek, purge, replay, republish, totals_key
from .priority import HEADER, PRIORITY_HEADER, REPLAYED_HEADER, TASK_OPTION, mark_priority, message_importance
from .sampler import BrokerBacklog, Sampler, redis_subqueues
from .state import ShedState, ShedView, publish_sample, read_states, state_key
from .status import ShedStatus

__all__ = [
    "HEADER",
    "MODES",
    "PRIORITY_HEADER",
    "REPLAYED_HEADER",
    "TASK_OPTION",
    "BacklogEstimate",
    "BrokerBacklog",
    "ParkOutcome",
    "QueuePolicy",
    "ReplayReport",
    "Sampler",
    "ShedGuard",
    "ShedState",
    "ShedStatus",
    "ShedView",
    "guard_requests",
    "mark_priority",
    "message_importance",
    "park",
    "parked_key",
    "peek",
    "publish_sample",
    "purge",
    "queue_policies",
    "read_states",
    "redis_subqueues",
    "replay",
    "republish",
    "state_key",
    "totals_key",
]
