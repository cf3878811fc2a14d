"""``celery -A proj supervision pause|resume TARGET``: an operator's pause of a domain or a child's queue."""

from __future__ import annotations

import click

from .common import emit, json_option, runtime_of

__all__ = ["pause", "resume"]


@click.command()
@click.argument("target")
@click.option("--for", "duration_s", type=click.FloatRange(min=0.001), default=None,
              help="Seconds (default: prismatic_cooldown_max_s).")
@json_option
@click.pass_context
def pause(ctx: click.Context, target: str, duration_s: float | None, as_json: bool) -> None:
    """Pause TARGET (a domain or a child's queue) on every worker: a manual pause record that expires."""
    from ..worker.control import UnknownTargetError, pause_target

    runtime = runtime_of(ctx)
    try:
        found = pause_target(runtime, target, duration_s, by="operator via cli")
    except UnknownTargetError as exc:
        raise click.ClickException(str(exc)) from None
    seconds = runtime.settings.cooldown_max_s if duration_s is None else duration_s
    emit({"domain": found.domain, "queues": list(found.queues), "seconds": seconds}, as_json,
         f"paused {','.join(found.queues)} of {found.domain} for {seconds:g}s")


@click.command()
@click.argument("target")
@json_option
@click.pass_context
def resume(ctx: click.Context, target: str, as_json: bool) -> None:
    """End the pauses of TARGET now; for a domain also its cool-down and escalation (workers resume within a second)."""
    from ..worker.control import UnknownTargetError, resume_target

    runtime = runtime_of(ctx)
    try:
        found, cleared = resume_target(runtime, target, by="operator via cli")
    except UnknownTargetError as exc:
        raise click.ClickException(str(exc)) from None
    emit({"domain": found.domain, "queues": list(found.queues), "released": cleared}, as_json,
         f"resumed {found.domain if found.whole_domain else found.queues[0]}: {cleared} paused queue(s) released")
