"""A failed execution and, when the child's failure rate says so, a restart of the child.

One failed message costs one store round trip: the Lua script ``scripts/restart.lua``
adds the failure to the child's execution window (:mod:`.window`) and, when the
child fails by rate, counts the child's restart in its hotspot window, the domain's
budget and, on overrun, the supervisor's budget, writes the pause records the
strategy asks for, and appends the events to the stream, atomically, on the store's
clock. Its Python twin below runs on the memory store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import MemoryStore, Script, Store
from ..store.base import Scalar, ScriptCall
from ..store.keys import Keys
from .pauses import pause_key, rest_cause
from .tree import Child, Domain, Strategy, Supervisor
from .window import PRELUDE, count_executions, executions_key

__all__ = [
    "RESTART", "ChildPolicy", "RestartOutcome", "failure_call", "parse_outcome", "record_failure", "restart_keys",
]

WINDOW_CAP = 1000  # entries kept per sliding window: memory stays bounded whatever the failure rate
_FIXED_KEYS = 10
_FIXED_ARGS = 25


@dataclass(frozen=True)
class ChildPolicy:
    """When a child fails, and what its failure does (from the settings)."""

    window_s: float
    min_executions: int
    failure_rate: float
    hotspot_window_s: float
    pause_s: float
    cooldowns_s: Sequence[float]
    """The cool-down schedule by attempt (the last entry is the maximum and the escalation cool-down)."""
    cooldown_reset_s: float
    stream_maxlen: int


@dataclass(frozen=True)
class RestartOutcome:
    """What the store decided for one failed execution."""

    tripped: bool
    """The child failed by rate: it restarted (strategy, budgets) and its window starts afresh."""
    successes: int
    failures: int
    """The child's executions in its window when this failure was judged (this one included)."""
    child_restarts: int
    """Restarts of the child within the hotspot window (this one included; 0 unless tripped)."""
    domain_restarts: int
    """Restarts of the domain within its budget period (0 after the budget reset, or unless tripped)."""
    budget_exceeded: bool
    supervisor_restarts: int
    escalated: bool
    cooldown_attempt: int
    cooldown_s: float
    paused: tuple[str, ...]
    """Queues this decision paused (not those already paused for longer by the same cause)."""
    now: float
    recycle_generation: int
    """New recycle generation of the domain (one_for_all), else 0."""
    countdown_s: float
    """The re-run's countdown after the domain's cool-down (-1: not a re-run)."""
    new_pattern: bool
    """The failure pattern was not seen within the marker's ttl: its escalation is due."""
    foreign: bool = False
    """The execution window held foreign data, which was removed."""


def restart_keys(keys: Keys, domain: Domain, child: Child, pattern: str) -> list[str]:
    """The script's KEYS, in the order ``restart.lua`` documents (``pattern``: the escalation marker)."""
    strategy = rest_cause(child.queue) if domain.strategy is Strategy.REST_FOR_ONE else "one_for_all"
    pauses = [pause_key(keys, q, cause) for q in domain.queues for cause in ("escalated", "cooldown", strategy)]
    return [
        executions_key(keys, child.queue),
        keys.key("restarts", child.queue),
        keys.key("budget", domain.name),
        keys.key("supervisor-budget"),
        keys.key("restart-totals"),
        keys.key("cooldown", domain.name),
        keys.key("escalation", domain.name),
        keys.key("recycle", domain.name),
        keys.key("events"),
        pattern,
        *pauses,
    ]


def _mode(strategy: Strategy) -> str:
    return {Strategy.ONE_FOR_ONE: "none", Strategy.REST_FOR_ONE: "rest", Strategy.ONE_FOR_ALL: "all"}[strategy]


def _twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[Any]:
    """The Python twin of restart.lua (same semantics on the in-process store)."""
    now = store.clock()
    member, queue, domain = str(args[0]), str(args[1]), str(args[2])
    cap = int(args[8])
    stream = keys[8]
    maxlen = int(args[19])
    ok, fail, foreign = count_executions(store, keys[0], now, float(args[3]), int(args[6]), 1)
    total = ok + fail
    tripped = total >= int(args[4]) and fail >= float(args[5]) * total
    child_count = domain_count = exceeded = escalated = attempt = supervisor_count = recycle = 0
    cooldown = 0.0
    paused: list[int] = []
    mode, index, pause_s = str(args[13]), int(args[14]), float(args[15])
    children = (len(keys) - _FIXED_KEYS) // 3

    def pause_at(i: int, slot: int) -> str:
        return keys[_FIXED_KEYS + 3 * (i - 1) + slot - 1]

    def pause(key: str, reason: str, seconds: float) -> int:
        ttl = store.ttl(key)
        if ttl is not None and ttl >= math.ceil(seconds * 1000) / 1000:
            return 0
        record = {"domain": domain, "reason": reason, "by": queue, "since": now, "until": now + seconds}
        store.set_raw(key, json.dumps(record), ttl_s=math.ceil(seconds * 1000) / 1000)
        return 1

    if tripped:
        store.delete(keys[0])
        child_count = store.window_add(keys[1], member, now, float(args[7]), cap=cap)
        store.hincr(keys[4], {queue: 1})
        domain_count = store.window_add(keys[2], member, now, float(args[10]), cap=cap)
        if domain_count > int(args[9]):
            exceeded = 1
            attempt = int(store.raw(keys[5]) or 0) + 1
            schedule = [float(a) for a in args[_FIXED_ARGS:]]
            cooldown = schedule[min(attempt, len(schedule)) - 1]
            store.set_raw(keys[5], str(attempt), ttl_s=float(args[16]))
            store.delete(keys[2])
            supervisor_count = store.window_add(keys[3], member, now, float(args[12]), cap=cap)
            if supervisor_count > int(args[11]):
                escalated = 1
                cooldown = float(args[17])
                store.set_raw(keys[6], json.dumps({"domain": domain, "at": now, "by": queue,
                                                   "reason": "supervisor_budget_exceeded"}), ttl_s=cooldown)
            reason = "escalated" if escalated else "cooldown"
            paused = [i for i in range(1, children + 1) if pause(pause_at(i, 1 if escalated else 2), reason, cooldown)]
        elif mode == "rest":
            paused = [i for i in range(index + 1, children + 1) if pause(pause_at(i, 3), "rest_for_one", pause_s)]
        elif mode == "all":
            recycle = int(store.raw(keys[7]) or 0) + 1
            store.set_raw(keys[7], str(recycle), ttl_s=86400)
            paused = [i for i in range(1, children + 1) if pause(pause_at(i, 3), "one_for_all", pause_s)]

    countdown = float(args[21])
    if countdown >= 0:
        held = max(store.ttl(pause_at(index, 1)) or 0.0, store.ttl(pause_at(index, 2)) or 0.0)
        if held > 0:
            countdown = max(countdown, held + float(args[22]) * max(1.0, held / 2))

    def append(fields: dict[str, object]) -> None:
        store.stream_add(stream, {"time": str(now), **{k: str(v) for k, v in fields.items()}}, maxlen=maxlen)

    if str(args[20]):
        message = json.loads(str(args[20]))
        if "countdown_s" in message:
            message["countdown_s"] = f"{countdown:.3f}"
        append(message)
    new_pattern = 0
    ttl_ms = int(args[23])
    if ttl_ms > 0:
        if store.raw(keys[9]) is None:
            new_pattern = 1
            store.set_raw(keys[9], str(now), ttl_s=ttl_ms / 1000)
            if str(args[24]):
                append(json.loads(str(args[24])))
        else:
            store.expire(keys[9], ttl_ms / 1000)

    context = json.loads(str(args[18]))

    def event(kind: str, **extra: object) -> None:
        append({"type": kind, "domain": domain, "child": queue, **context, **extra})

    if tripped:
        event("restart", child_restarts=child_count, domain_restarts=domain_count, executions=total, failures=fail,
              window_s=args[3])
        if paused:
            strategy = {"rest": "rest_for_one", "all": "one_for_all"}.get(mode, mode)
            reason = "escalated" if escalated else ("cooldown" if exceeded else strategy)
            event("pause", reason=reason, paused=len(paused), cooldown_s=cooldown)
        if escalated:
            event("escalation", reason="supervisor_budget_exceeded", supervisor_restarts=supervisor_count)
    return [int(tripped), ok, fail, child_count, domain_count, exceeded, supervisor_count, escalated, attempt,
            str(cooldown), paused, str(now), recycle, str(countdown), new_pattern, foreign]


RESTART = Script.from_file(Path(__file__).parent / "scripts" / "restart.lua", _twin, prelude=[PRELUDE])


def failure_call(
    keys: Keys,
    supervisor: Supervisor,
    domain: Domain,
    child: Child,
    member: str,
    policy: ChildPolicy,
    *,
    pending_successes: int = 0,
    context: dict[str, str],
    message_event: dict[str, Any] | None = None,
    countdown_s: float = -1.0,
    jitter: float = 0.0,
    pattern: str | None = None,
    pattern_ttl_s: float = 0.0,
    pattern_event: dict[str, Any] | None = None,
) -> ScriptCall:
    """The script call that records one failed execution of ``child`` (see ``restart.lua``).

    ``member`` identifies this failure (e.g. ``<task id>:<attempt>``) in the restart windows;
    ``context`` are the fields of the child's events; ``message_event`` is the message's own
    stream entry (its ``countdown_s`` is replaced by the final countdown); ``countdown_s`` is
    the re-run's backoff (-1: no re-run) and ``jitter`` (0..1) spreads a re-run that lands in
    a cool-down; ``pattern`` is the key marking an escalated failure pattern, checked (and
    ``pattern_event`` appended when new) when ``pattern_ttl_s`` > 0.
    """
    budget = supervisor.budget_for(domain)
    args: list[Scalar] = [
        member, child.queue, domain.name, policy.window_s, policy.min_executions, policy.failure_rate,
        pending_successes, policy.hotspot_window_s, WINDOW_CAP,
        budget.max_restarts, budget.period_s, supervisor.budget.max_restarts, supervisor.budget.period_s,
        _mode(domain.strategy), domain.queues.index(child.queue) + 1, policy.pause_s, policy.cooldown_reset_s,
        max(policy.cooldowns_s), json.dumps(context), policy.stream_maxlen,
        json.dumps(message_event) if message_event else "", countdown_s, min(1.0, max(0.0, jitter)),
        max(0, int(pattern_ttl_s * 1000)) if pattern else 0, json.dumps(pattern_event) if pattern_event else "",
        *policy.cooldowns_s,
    ]
    marker = pattern or keys.key("pattern", "-")
    return ScriptCall(RESTART, restart_keys(keys, domain, child, marker), args)


def parse_outcome(domain: Domain, raw: Any) -> RestartOutcome:
    """The script's reply as a :class:`RestartOutcome`."""
    queues = domain.queues
    return RestartOutcome(
        tripped=bool(int(raw[0])),
        successes=int(raw[1]),
        failures=int(raw[2]),
        child_restarts=int(raw[3]),
        domain_restarts=int(raw[4]),
        budget_exceeded=bool(int(raw[5])),
        supervisor_restarts=int(raw[6]),
        escalated=bool(int(raw[7])),
        cooldown_attempt=int(raw[8]),
        cooldown_s=float(raw[9]),
        paused=tuple(queues[int(i) - 1] for i in (raw[10] or [])),
        now=float(raw[11]),
        recycle_generation=int(raw[12]),
        countdown_s=float(raw[13]),
        new_pattern=bool(int(raw[14])),
        foreign=bool(int(raw[15])),
    )


def record_failure(store: Store, call: ScriptCall, domain: Domain) -> RestartOutcome:
    """Run one failure's script call alone (one round trip) and parse its outcome."""
    return parse_outcome(domain, store.run(call.script, call.keys, call.args))
