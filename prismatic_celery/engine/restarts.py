"""Counting a restart: child window, domain budget, supervisor budget and strategy pauses, atomically.

One crash costs one store round trip: the Lua script ``scripts/restart.lua``
(its Python twin below runs on the memory store). Time is the store's clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..keys import Keys
from ..store import MemoryStore, Script, Store
from ..store.base import Scalar
from ..tree import Child, Domain, Strategy, Supervisor

__all__ = ["RESTART", "RestartOutcome", "pause_key", "record_restart", "restart_keys"]

WINDOW_CAP = 1000  # entries kept per sliding window: memory stays bounded whatever the failure rate


@dataclass(frozen=True)
class RestartOutcome:
    """What the store decided for one crash."""

    child_restarts: int
    """Restarts of the child within the hotspot window (this one included)."""
    domain_restarts: int
    """Restarts of the domain within its budget period (0 after the budget reset)."""
    budget_exceeded: bool
    supervisor_restarts: int
    escalated: bool
    cooldown_attempt: int
    cooldown_s: float
    paused: tuple[str, ...]
    """Queues this decision paused (not those already paused for longer)."""
    now: float
    recycle_generation: int
    """New recycle generation of the domain (one_for_all), else 0."""


def pause_key(keys: Keys, queue: str) -> str:
    """``prismatic:<ns>:pause:<queue>``: a pause record (JSON) that expires when the pause ends."""
    return keys.key("pause", queue)


def restart_keys(keys: Keys, domain: Domain, child: Child) -> list[str]:
    """The script's KEYS, in the order ``restart.lua`` documents."""
    return [
        keys.key("restarts", child.queue),
        keys.key("budget", domain.name),
        keys.key("supervisor-budget"),
        keys.key("restart-totals"),
        keys.key("cooldown", domain.name),
        keys.key("escalation", domain.name),
        keys.key("recycle", domain.name),
        keys.key("events"),
        *(pause_key(keys, q) for q in domain.queues),
    ]


def _mode(strategy: Strategy) -> str:
    return {Strategy.ONE_FOR_ONE: "none", Strategy.REST_FOR_ONE: "rest", Strategy.ONE_FOR_ALL: "all"}[strategy]


def _twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[Any]:
    """The Python twin of restart.lua (same semantics on the in-process store)."""
    now = store.clock()
    member, queue, domain = str(args[0]), str(args[1]), str(args[2])
    cap = int(args[4])
    child_count = store.window_add(keys[0], member, now, float(args[3]), cap=cap)
    store.hincr(keys[3], {queue: 1})
    domain_count = store.window_add(keys[1], member, now, float(args[6]), cap=cap)
    pause_keys = list(keys[8:])
    exceeded = escalated = attempt = supervisor_count = recycle = 0
    cooldown = 0.0
    paused: list[int] = []

    def pause(key: str, reason: str, seconds: float) -> int:
        ttl = store.ttl(key)
        if ttl is not None and ttl >= seconds:
            return 0
        record = {"domain": domain, "reason": reason, "by": queue, "since": now, "until": now + seconds}
        store.set_raw(key, json.dumps(record), ttl_s=seconds)
        return 1

    mode, index, pause_s = str(args[9]), int(args[10]), float(args[11])
    if domain_count > int(args[5]):
        exceeded = 1
        attempt = int(store.raw(keys[4]) or 0) + 1
        schedule = [float(a) for a in args[16:]]
        cooldown = schedule[min(attempt, len(schedule)) - 1]
        store.set_raw(keys[4], str(attempt), ttl_s=float(args[12]))
        store.delete(keys[1])
        supervisor_count = store.window_add(keys[2], member, now, float(args[8]), cap=cap)
        if supervisor_count > int(args[7]):
            escalated = 1
            cooldown = float(args[13])
            store.set_raw(keys[5], json.dumps({"domain": domain, "at": now, "by": queue,
                                               "reason": "supervisor_budget_exceeded"}), ttl_s=cooldown)
        for i, key in enumerate(pause_keys, start=1):
            pause(key, "escalated" if escalated else "cooldown", cooldown)
            paused.append(i)
    elif mode == "rest":
        paused = [i for i, key in enumerate(pause_keys, start=1)
                  if i > index and pause(key, "rest_for_one", pause_s)]
    elif mode == "all":
        recycle = int(store.raw(keys[6]) or 0) + 1
        store.set_raw(keys[6], str(recycle), ttl_s=86400)
        paused = [i for i, key in enumerate(pause_keys, start=1) if pause(key, "one_for_all", pause_s)]
    context = json.loads(str(args[14]))
    maxlen = int(args[15])

    def event(kind: str, **extra: Any) -> None:
        fields = {"type": kind, "time": str(now), "domain": domain, "child": queue, **context}
        store.stream_add(keys[7], {k: str(v) for k, v in {**fields, **extra}.items()}, maxlen=maxlen)

    event("restart", child_restarts=child_count, domain_restarts=domain_count)
    if paused:
        strategy = {"rest": "rest_for_one", "all": "one_for_all"}.get(mode, mode)
        reason = "escalated" if escalated else ("cooldown" if exceeded else strategy)
        event("pause", reason=reason, paused=len(paused), cooldown_s=cooldown)
    if escalated:
        event("escalation", reason="supervisor_budget_exceeded", supervisor_restarts=supervisor_count)
    return [child_count, domain_count, exceeded, supervisor_count, escalated, attempt, str(cooldown), paused,
            str(now), recycle]


RESTART = Script.from_file(Path(__file__).parent / "scripts" / "restart.lua", _twin)


def record_restart(
    store: Store,
    keys: Keys,
    supervisor: Supervisor,
    domain: Domain,
    child: Child,
    member: str,
    *,
    hotspot_window_s: float,
    pause_s: float,
    cooldowns_s: Sequence[float],
    cooldown_reset_s: float,
    context: dict[str, str],
    stream_maxlen: int,
) -> RestartOutcome:
    """Count one restart of ``child`` and apply the domain's strategy (one round trip).

    ``cooldowns_s`` is the cool-down schedule by attempt (the last entry is the
    maximum and the escalation cool-down); ``member`` identifies this restart
    (e.g. ``<task id>:<attempt>``) so a redelivered decision is not counted twice.
    """
    budget = supervisor.budget_for(domain)
    args: list[Scalar] = [
        member, child.queue, domain.name, hotspot_window_s, WINDOW_CAP,
        budget.max_restarts, budget.period_s, supervisor.budget.max_restarts, supervisor.budget.period_s,
        _mode(domain.strategy), domain.queues.index(child.queue) + 1, pause_s, cooldown_reset_s,
        max(cooldowns_s), json.dumps(context), stream_maxlen, *cooldowns_s,
    ]
    raw = store.run(RESTART, restart_keys(keys, domain, child), args)
    queues = domain.queues
    return RestartOutcome(
        child_restarts=int(raw[0]),
        domain_restarts=int(raw[1]),
        budget_exceeded=bool(int(raw[2])),
        supervisor_restarts=int(raw[3]),
        escalated=bool(int(raw[4])),
        cooldown_attempt=int(raw[5]),
        cooldown_s=float(raw[6]),
        paused=tuple(queues[int(i) - 1] for i in (raw[7] or [])),
        now=float(raw[8]),
        recycle_generation=int(raw[9]),
    )
