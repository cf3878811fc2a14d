"""Shedding state: published by the samplers, read by every process that runs tasks.

``prismatic:{<ns>}:shed:<queue>`` (JSON, expires) exists exactly while the queue
sheds, so every worker agrees and a sampler that dies cannot leave a queue
shedding for longer than the expiry. ``prismatic:{<ns>}:backlog`` (hash) keeps
the last sampled backlog of each queue for operators. Both are written by one
Lua script per sample (all queues in one round trip); hysteresis is decided
inside it, so concurrent samplers on several workers move the state atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...store import MemoryStore, Script, Store
from ...store.base import Scalar
from ...store.keys import Keys
from ...store.view import PeriodicView
from .config import QueuePolicy

__all__ = ["STATE_SCRIPT", "ShedState", "ShedView", "Transition", "publish_sample", "read_states", "state_key"]


def state_key(keys: Keys, queue: str) -> str:
    """``prismatic:{<ns>}:shed:<queue>``: present (JSON) while ``queue`` sheds."""
    return keys.key("shed", queue)


def backlog_key(keys: Keys) -> str:
    """``prismatic:{<ns>}:backlog``: hash of the last sampled backlog per queue (``<queue>``, ``<queue>:at``)."""
    return keys.key("backlog")


@dataclass(frozen=True)
class ShedState:
    """A queue in shedding state, as the last sample saw it (times: the store's clock, seconds)."""

    queue: str
    backlog: int
    threshold: int
    resume_below: int
    since: float
    sampled_at: float
    by: str

    @classmethod
    def from_json(cls, queue: str, data: object) -> ShedState | None:
        """Validate a stored record; None for anything malformed."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(queue=queue, backlog=int(data["backlog"]), threshold=int(data["threshold"]),
                       resume_below=int(data["resume_below"]), since=float(data["since"]),
                       sampled_at=float(data["sampled_at"]), by=str(data.get("by", "")))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Transition:
    """What one sample did to one queue."""

    queue: str
    backlog: int
    shedding: bool
    started: bool
    stopped: bool


def _twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[list[int]]:
    """The Python twin of state.lua."""
    now = store.clock()
    ttl_s = int(args[0]) / 1000.0
    out: list[list[int]] = []
    for i, key in enumerate(keys[1:]):
        queue, backlog, threshold, resume_below = (str(args[2 + 4 * i]), int(args[3 + 4 * i]),
                                                   int(args[4 + 4 * i]), int(args[5 + 4 * i]))
        raw = store.raw(key)
        current: object = None
        if isinstance(raw, str):
            try:
                current = json.loads(raw)
            except ValueError:
                current = None
        if not isinstance(current, dict):
            current = None
        shedding, transition = current is not None, 0
        if shedding and backlog < resume_below:
            shedding, transition = False, -1
        elif not shedding and backlog > threshold:
            shedding, transition = True, 1
        if shedding:
            since = now
            if current is not None and isinstance(current.get("since"), (int, float)):
                since = float(current["since"])
            record = {"queue": queue, "backlog": backlog, "threshold": threshold, "resume_below": resume_below,
                      "since": since, "sampled_at": now, "by": str(args[1])}
            store.set_raw(key, json.dumps(record), ttl_s=ttl_s)
        elif raw is not None:
            store.delete(key)
        store.hset(keys[0], {queue: str(backlog), f"{queue}:at": f"{now:.3f}"})
        out.append([1 if shedding else 0, transition])
    store.expire(keys[0], ttl_s)
    return out


STATE_SCRIPT = Script.from_file(Path(__file__).parent / "scripts" / "state.lua", _twin)


def publish_sample(
    store: Store, keys: Keys, backlogs: Mapping[str, int], policies: Mapping[str, QueuePolicy], *,
    ttl_s: float, sampler: str,
) -> list[Transition]:
    """Record one sample of ``backlogs`` and move each queue's state (one round trip)."""
    queues = [q for q in backlogs if q in policies]
    if not queues:
        return []
    args: list[Scalar] = [max(1, int(ttl_s * 1000)), sampler]
    for queue in queues:
        policy = policies[queue]
        args += [queue, int(backlogs[queue]), policy.threshold, policy.resume_below]
    raw = store.run(STATE_SCRIPT, [backlog_key(keys), *(state_key(keys, q) for q in queues)], args)
    transitions: list[Transition] = []
    for queue, row in zip(queues, raw or [], strict=False):
        shedding, moved = int(row[0]), int(row[1])
        transitions.append(Transition(queue=queue, backlog=int(backlogs[queue]), shedding=bool(shedding),
                                      started=moved > 0, stopped=moved < 0))
    return transitions


def read_states(store: Store, keys: Keys, queues: Sequence[str]) -> dict[str, ShedState]:
    """The queues of ``queues`` that shed now (one round trip)."""
    found: dict[str, ShedState] = {}
    for queue, data in zip(queues, store.get_many([state_key(keys, q) for q in queues]), strict=True):
        state = ShedState.from_json(queue, data) if data is not None else None
        if state is not None:
            found[queue] = state
    return found


class ShedView(PeriodicView[ShedState]):
    """A process's view of which queues shed, read from the store at most once per ``max_age_s``.

    The guard asks it before every supervised task: a dictionary lookup, plus one
    MGET when the view is older than the sampler's period (never one per task).
    """

    def read(self) -> dict[str, ShedState]:
        return read_states(self.store, self.keys, self.queues)

    def get(self, queue: str) -> ShedState | None:
        """The shedding state of ``queue`` (None when it does not shed)."""
        return self.current().get(queue)
