"""Remote control commands the plugin registers with Celery's worker.

* ``celery -A proj inspect supervision_health``: each worker replies with
  :func:`~prismatic_celery.health.get_tree_health` (the cluster-wide tree state and
  score, plus its own processes and memory per domain).
* ``celery -A proj control supervision_pause TARGET [SECONDS]``: TARGET is a domain or a
  child's queue; SECONDS defaults to ``prismatic_cooldown_max_s``. Reply ``{"ok": ...}``
  naming the queues paused, or ``{"error": ...}``.
* ``celery -A proj control supervision_resume TARGET``: reply ``{"ok": ...}`` naming the
  queues released, or ``{"error": ...}``.
* ``supervision_reconcile [queue ...]``: internal; re-read the pause records now.

A pause writes a pause record with reason ``manual`` (the store is the source
of truth: workers that missed the command, or start later, converge to it
within one reconcile period), stops consuming those queues on the worker that
received the command at once, and broadcasts ``supervision_reconcile``. A
resume of a domain ends every pause of its children and its cool-down and
escalation (as ``celery supervision resume`` does); a resume of a queue ends
that queue's pause. The same functions serve the CLI (:func:`pause_target`,
:func:`resume_target`).

Control commands run on the worker's event loop: each costs a few store round
trips (bounded by ``prismatic_store_timeout_s``), never a wait on tasks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.worker.control import control_command, inspect_command

from .engine.pauses import Pause, clear_pauses, set_pause
from .health import connect_sampler, get_tree_health, sample_worker
from .log import get_logger, log_event
from .runtime import Runtime, get_runtime

__all__ = [
    "Target",
    "UnknownTargetError",
    "pause_target",
    "resolve_target",
    "resume_target",
    "supervision_health",
    "supervision_pause",
    "supervision_reconcile",
    "supervision_resume",
]

logger = get_logger("control")


class UnknownTargetError(LookupError):
    """A pause/resume target that is neither a domain nor a supervised queue."""


@dataclass(frozen=True)
class Target:
    """What a pause or resume acts on: a whole domain, or one child's queue."""

    domain: str
    queues: tuple[str, ...]
    whole_domain: bool


def resolve_target(runtime: Runtime, name: str) -> Target:
    """A domain name (all its queues) or a child's queue; :class:`UnknownTargetError` otherwise."""
    tree = runtime.supervisor
    for domain in tree.domain_list:
        if domain.name == name:
            return Target(domain.name, tuple(domain.queues), True)
    located = tree.locate(name)
    if located is not None:
        return Target(located[0].name, (located[1].queue,), False)
    known = ", ".join([d.name for d in tree.domain_list] + list(tree.queues)) or "none"
    raise UnknownTargetError(f"{name!r} is neither a domain nor a supervised queue; known: {known}")


def pause_target(runtime: Runtime, name: str, duration_s: float | None = None, *, by: str = "operator") -> Target:
    """Write a ``manual`` pause record for ``name``'s queues (expires after ``duration_s``) and announce it.

    ``duration_s`` defaults to ``prismatic_cooldown_max_s``. Broadcasts ``supervision_reconcile``.
    """
    target = resolve_target(runtime, name)
    seconds = float(runtime.settings.cooldown_max_s if duration_s is None else duration_s)
    if not seconds > 0:
        raise ValueError(f"the pause duration must be > 0 seconds, got {duration_s!r}")
    now = runtime.store.time()
    for queue in target.queues:
        set_pause(runtime.store, runtime.keys, Pause(queue, target.domain, "manual", by, now, now + seconds))
    runtime.emit("pause", domain=target.domain, queues=",".join(target.queues), reason="manual", by=by,
                 cooldown_s=seconds)
    runtime.broadcast_reconcile(pause=list(target.queues))
    return target


def resume_target(runtime: Runtime, name: str, *, by: str = "operator") -> tuple[Target, int]:
    """End the pauses of ``name`` (a domain: also its cool-down and escalation); the target and pauses ended."""
    target = resolve_target(runtime, name)
    cleared = clear_pauses(runtime.store, runtime.keys, runtime.supervisor, target.queues)
    if target.whole_domain:
        runtime.store.delete(runtime.keys.key("escalation", target.domain), runtime.keys.key("cooldown", target.domain))
    runtime.emit("resume", domain=target.domain, queues=",".join(target.queues), reason="operator", by=by)
    runtime.broadcast_reconcile(pause=[])
    return target, cleared


def _runtime(state: Any) -> tuple[Any, Runtime | None]:
    consumer = state.consumer
    try:
        return consumer, get_runtime(consumer.app)
    except Exception:  # bad configuration was reported at start-up
        return consumer, None


@control_command(args=[("pause", list)], signature="[queue, ...]")
def supervision_reconcile(state: Any, pause: list[str] | None = None, **_: Any) -> dict[str, Any]:
    """Re-read the pause records now; stop consuming ``pause`` queues at once."""
    consumer, runtime = _runtime(state)
    if runtime is None or runtime.reconciler is None:
        return {"ok": "not supervised"}
    runtime.reconciler.pause_now(consumer, [q for q in (pause or []) if isinstance(q, str)])
    return {"ok": "reconciling"}


@inspect_command()
def supervision_health(state: Any, **_: Any) -> dict[str, Any]:
    """prismatic-celery: tree health, health score and this worker's processes and memory."""
    consumer, runtime = _runtime(state)
    if runtime is None:
        return {"error": "prismatic-celery is not enabled on this worker"}
    try:
        return get_tree_health(runtime, local=sample_worker(runtime, consumer))
    except Exception as exc:  # a reply, never a crash of the control loop
        log_event(logging.ERROR, "health-failed", logger, error=repr(exc)[:300])
        return {"error": f"health unavailable: {exc!r}"[:300]}


@control_command(args=[("target", str), ("duration_s", float)], signature="<domain|queue> [seconds]")
def supervision_pause(state: Any, target: str = "", duration_s: float | None = None, **_: Any) -> dict[str, Any]:
    """prismatic-celery: pause a domain's or a child's queues (manual pause record, all workers)."""
    consumer, runtime = _runtime(state)
    if runtime is None:
        return {"error": "prismatic-celery is not enabled on this worker"}
    try:
        found = pause_target(runtime, target, duration_s, by=f"operator via {consumer.hostname}")
    except (UnknownTargetError, ValueError) as exc:
        return {"error": str(exc)}
    if runtime.reconciler is not None:
        runtime.reconciler.pause_now(consumer, list(found.queues))
    return {"ok": f"paused {','.join(found.queues)} of {found.domain}"}


@control_command(args=[("target", str)], signature="<domain|queue>")
def supervision_resume(state: Any, target: str = "", **_: Any) -> dict[str, Any]:
    """prismatic-celery: end the pauses (and, for a domain, the cool-down and escalation) of a target."""
    consumer, runtime = _runtime(state)
    if runtime is None:
        return {"error": "prismatic-celery is not enabled on this worker"}
    try:
        found, cleared = resume_target(runtime, target, by=f"operator via {consumer.hostname}")
    except UnknownTargetError as exc:
        return {"error": str(exc)}
    if runtime.reconciler is not None:
        runtime.reconciler.wake.set()
    return {"ok": f"resumed {','.join(found.queues)} of {found.domain} ({cleared} pause(s) ended)"}


connect_sampler()  # each worker publishes its processes and memory for the cluster view
