"""A pool process died running a message: the death counted, the message's fate decided, the failure recorded.

Runs in the worker's main process (``SupervisedRequest``), with the app's :class:`~.engine.Engine`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..store.base import ScriptCall
from .engine import Engine, Fate
from .restarts import failure_call, parse_outcome
from .tree import Child, Domain

__all__ = ["DEATHS_TTL_S", "worker_lost"]

DEATHS_TTL_S = 86_400.0  # a message's pool-process deaths are remembered this long


def worker_lost(engine: Engine, domain: Domain, child: Child, task_id: str, task_name: str, hostname: str,
                decide: Callable[[int], Fate],
                letter: Callable[[int, str], dict[str, object]]) -> tuple[int, Fate]:
    """A pool process died running ``task_id``: count the death, decide the message's fate from the
    deaths so far (``decide``), and record the failure like any other, with the dead letter
    (``letter(deaths, reason)``) when the fate is one (two round trips)."""
    deaths = engine.store.incr(engine.keys.key("deaths", task_id), ttl_s=DEATHS_TTL_S)
    fate = decide(deaths)
    context = {"child": child.queue, "task": task_name, "task_id": task_id, "hostname": hostname,
               "exception": "WorkerLostError"}
    fields = {"domain": domain.name, **context, "action": fate.remediation or "", "rule": "",
              "failure_class": "resource_exhaustion", "deaths": deaths}
    message = engine.message_event(fate, fields, attempt=deaths)
    call = failure_call(
        engine.keys, engine.supervisor, domain, child, f"{task_id}:lost:{deaths}", engine.policy(domain),
        context={k: v for k, v in context.items() if k != "child"},
        message_event={k: str(v) for k, v in message.items()}, countdown_s=fate.countdown_s,
        jitter=engine.random.random(),
    )
    calls: list[ScriptCall] = [call]
    learning = engine.learning
    if learning is not None:
        metrics = learning.metrics
        calls.append(metrics.crash_call(task_id, False, recurring=deaths > 1))
        if fate.outcome == "dead_letter":
            calls += [metrics.count_call(task_id, "dead_letters"), metrics.failed_call(task_id)]
    if fate.outcome == "dead_letter":
        calls.append(engine.dlq.push_call(letter(deaths, fate.reason)))
    replies = engine.store.run_many(calls)
    outcome = parse_outcome(domain, replies[0])
    if fate.outcome == "dead_letter":
        engine.dlq.pushed(calls[-1], replies[-1])
    engine.announce(domain, child, outcome, context, message, recorded=True)
    if outcome.escalated and learning is not None:
        learning.metrics.escalated(task_id)
    return deaths, Fate(fate.outcome, fate.reason, outcome.countdown_s, fate.remediation)
