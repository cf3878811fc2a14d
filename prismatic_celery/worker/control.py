"""Remote control commands the plugin registers with Celery's worker.

* ``celery -A proj inspect supervision_health``: each worker replies with its own view in
  about twenty lines (:func:`worker_health`): its processes, memory per domain, the queues it
  consumes now, and the tree's score, state, pauses, escalations, hotspots and circuit states as
  it reads them from the store. The whole cluster's report is ``celery -A proj supervision
  health`` (read once from the store, not once per worker).
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
from typing import Protocol

from celery.worker.consumer import Consumer
from celery.worker.control import control_command, inspect_command

from ..errors import ConfigurationError
from ..log import get_logger, log_event
from ..observability.health import get_tree_health
from ..observability.sampler import sample_worker
from ..runtime import Runtime, get_runtime
from ..supervision.pauses import Pause, clear_pauses, set_pause
from ..supervision.reconcile import Reconciler
from .state import worker_state

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
    "worker_health",
]

logger = get_logger("control")


class ControlState(Protocol):
    """What Celery hands a remote control command: the worker's consumer."""

    consumer: Consumer


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


def _runtime(state: ControlState) -> tuple[Consumer, Runtime | None]:
    consumer: Consumer = state.consumer
    try:
        return consumer, get_runtime(consumer.app)
    except Exception:  # bad configuration was reported at start-up
        return consumer, None


def _reconciler(consumer: Consumer) -> Reconciler | None:
    """The reconciler of the worker whose consumer runs the command (None before it started)."""
    found = worker_state(consumer.app)
    return found.reconciler if found is not None else None


@control_command(args=[("pause", list)], signature="[queue, ...]")
def supervision_reconcile(state: ControlState, pause: list[str] | None = None, **_: object) -> dict[str, object]:
    """Re-read the pause records now; stop consuming ``pause`` queues at once."""
    consumer, runtime = _runtime(state)
    reconciler = _reconciler(consumer)
    if runtime is None or reconciler is None:
        return {"ok": "not supervised"}
    reconciler.pause_now(consumer, [q for q in (pause or []) if isinstance(q, str)])
    return {"ok": "reconciling"}


@inspect_command()
def supervision_health(state: ControlState, **_: object) -> dict[str, object]:
    """prismatic-celery: tree health, health score and this worker's processes and memory."""
    consumer, runtime = _runtime(state)
    if runtime is None:
        return {"error": "prismatic-celery is not enabled on this worker"}
    try:
        return worker_health(runtime, consumer)
    except Exception as exc:  # a reply, never a crash of the control loop
        log_event(logging.ERROR, "health-failed", logger, error=repr(exc)[:300])
        return {"error": f"health unavailable: {exc!r}"[:300]}


def worker_health(runtime: Runtime, consumer: Consumer) -> dict[str, object]:
    """One worker's compact answer to ``inspect supervision_health``: its own processes, memory and consumed
    queues, and the tree's numbers it reads from the store (score, state, pauses, escalations, hotspots,
    circuit states); the full report is ``celery supervision health``."""
    worker = worker_state(consumer.app)
    reconciler = worker.reconciler if worker is not None else None
    sample = sample_worker(runtime.supervisor, consumer,
                           served=(lambda: reconciler.served_pids) if reconciler is not None else None)
    report = get_tree_health(runtime, local=sample)
    task_consumer = getattr(consumer, "task_consumer", None)
    consuming = sorted(q for q in (worker.consumed_queues if worker is not None else ())
                       if task_consumer is None or task_consumer.consuming_from(q))
    return {
        "scope": "worker", "hostname": sample.hostname, "pid": sample.pid, "pool": sample.pool,
        "processes": list(sample.processes), "total_processes": len(sample.processes),
        "rss_bytes": sample.rss_total, "memory_per_domain": dict(sample.memory_per_domain),
        "store": runtime.store.display_url, "consuming": consuming,
        "score": report.get("score"), "state": report.get("state"),
        "paused": [{"child": p["child"], "reason": p["reason"]} for p in report.get("paused") or []],
        "escalated": sorted(e["domain"] for e in report.get("escalations") or []),
        "hotspots": sorted(h["child"] for h in report.get("hotspots") or []),
        "circuits": {name: c["state"] for name, c in sorted((report.get("circuits") or {}).items())},
    }


def _known_target(value: str) -> str:
    """``celery control supervision_pause|resume TARGET``: refuse an unknown TARGET before anything is sent
    (one line, exit 1), as the worker would; on the worker side (no command line) the value passes."""
    import click

    ctx = click.get_current_context(silent=True)
    app = getattr(getattr(ctx, "obj", None), "app", None) if ctx is not None else None
    try:
        runtime = get_runtime(app) if app is not None else None
        if runtime is not None:
            resolve_target(runtime, value)
    except (UnknownTargetError, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from None
    return value


def _seconds(value: str) -> float:
    """``celery control supervision_pause TARGET SECONDS``: a positive number, else one line and exit 1."""
    import click

    try:
        seconds = float(value)
    except ValueError:
        raise click.ClickException(f"SECONDS must be a number, got {value!r}") from None
    if not seconds > 0:
        raise click.ClickException(f"SECONDS must be > 0, got {value!r}")
    return seconds


@control_command(args=[("target", _known_target), ("duration_s", _seconds)], signature="<domain|queue> [seconds]")
def supervision_pause(
    state: ControlState, target: str = "", duration_s: float | None = None, **_: object
) -> dict[str, object]:
    """prismatic-celery: pause a domain's or a child's queues (manual pause record, all workers)."""
    consumer, runtime = _runtime(state)
    if runtime is None:
        return {"error": "prismatic-celery is not enabled on this worker"}
    try:
        found = pause_target(runtime, target, duration_s, by=f"operator via {consumer.hostname}")
    except (UnknownTargetError, ValueError) as exc:
        return {"error": str(exc)}
    reconciler = _reconciler(consumer)
    if reconciler is not None:
        reconciler.pause_now(consumer, list(found.queues))
    return {"ok": f"paused {','.join(found.queues)} of {found.domain}"}


@control_command(args=[("target", _known_target)], signature="<domain|queue>")
def supervision_resume(state: ControlState, target: str = "", **_: object) -> dict[str, object]:
    """prismatic-celery: end the pauses (and, for a domain, the cool-down and escalation) of a target."""
    consumer, runtime = _runtime(state)
    if runtime is None:
        return {"error": "prismatic-celery is not enabled on this worker"}
    try:
        found, cleared = resume_target(runtime, target, by=f"operator via {consumer.hostname}")
    except UnknownTargetError as exc:
        return {"error": str(exc)}
    reconciler = _reconciler(consumer)
    if reconciler is not None:
        reconciler.wake.set()
    return {"ok": f"resumed {','.join(found.queues)} of {found.domain} ({cleared} pause(s) ended)"}

