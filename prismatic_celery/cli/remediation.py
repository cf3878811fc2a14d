"""``celery -A proj supervision dlq list|show|replay|purge``: the dead-letter queue for operators."""

from __future__ import annotations

import json
import sys
from typing import TypedDict

import click

from ..runtime import Runtime
from .common import EXIT_ERROR, emit, json_option, runtime_of
from .tables import table

__all__ = ["dlq"]


class ReplayResult(TypedDict):
    """One dead letter of ``dlq replay --json``."""

    id: str
    replayed: bool
    error: str | None


def _domain(runtime: Runtime, name: str) -> str:
    """The domain named ``name``; exit 1 with one line naming the known ones otherwise (as the README says)."""
    try:
        return str(runtime.supervisor.domain(name).name)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None


@click.group(name="dlq")
def dlq() -> None:
    """Dead letters: messages the supervisor gave up on, kept whole for replay."""


@dlq.command(name="list")
@click.argument("domain")
@click.option("--limit", default=50, show_default=True, help="Newest entries to show.")
@json_option
@click.pass_context
def list_(ctx: click.Context, domain: str, limit: int, as_json: bool) -> None:
    """List DOMAIN's dead letters (oldest first)."""
    runtime = runtime_of(ctx)
    entries = runtime.dlq.list(_domain(runtime, domain), limit=limit)
    human = table(["ID", "TASK", "QUEUE", "EXCEPTION", "ATTEMPTS", "REASON"],
                  [[e["id"], e.get("task"), e.get("queue"), e.get("exception"), e.get("attempts"), e.get("reason")]
                   for e in entries], fit=5) if entries else f"no dead letters in {domain}"
    emit(entries, as_json, human)


@dlq.command()
@click.argument("domain")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the default: a letter is JSON).")
@click.pass_context
def show(ctx: click.Context, domain: str, task_id: str, as_json: bool) -> None:
    """Show one dead letter in full (JSON); exit 1 when absent."""
    runtime = runtime_of(ctx)
    entry = runtime.dlq.get(_domain(runtime, domain), task_id)
    if entry is None:
        raise click.ClickException(f"no dead letter {task_id} in {domain}")
    click.echo(json.dumps(entry, indent=2, sort_keys=True, default=str))


@dlq.command()
@click.argument("domain")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter of DOMAIN.")
@click.option("--force", is_flag=True, help="Replay even a task this app does not register.")
@json_option
@click.pass_context
def replay(ctx: click.Context, domain: str, task_ids: tuple[str, ...], replay_all: bool, force: bool,
           as_json: bool) -> None:
    """Publish dead letters onto their queues again, each exactly once; exit 1 if one was not found."""
    runtime = runtime_of(ctx)
    name = _domain(runtime, domain)
    if replay_all:
        task_ids = tuple(str(e["id"]) for e in runtime.dlq.list(name, limit=runtime.settings.dlq_max))
    if not task_ids:
        raise click.UsageError("name TASK_IDS or pass --all")
    results: list[ReplayResult] = []
    for task_id in task_ids:
        try:
            replayed = runtime.dlq.replay(runtime.app, name, task_id, force=force)
            error = None if replayed is not None else f"no dead letter {task_id} in {name}"
        except ValueError as exc:
            error = str(exc)
        results.append(ReplayResult(id=task_id, replayed=error is None, error=error))
        if error is not None and not as_json:
            click.echo(error, err=True)
        elif not as_json:
            click.echo(f"replayed {task_id}")
    if as_json:
        emit(results, True, "")
    if any(r["error"] for r in results):
        sys.exit(EXIT_ERROR)


@dlq.command()
@click.argument("domain")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def purge(ctx: click.Context, domain: str, yes: bool, as_json: bool) -> None:
    """Delete every dead letter of DOMAIN."""
    runtime = runtime_of(ctx)
    name = _domain(runtime, domain)
    if not yes:
        click.confirm(f"delete {runtime.dlq.count(name)} dead letter(s) of {name}?", abort=True)
    purged = runtime.dlq.purge(name)
    emit({"domain": name, "purged": purged}, as_json, f"purged {purged} dead letter(s) from {name}")
