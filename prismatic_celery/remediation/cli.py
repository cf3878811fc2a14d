"""``celery -A proj supervision dlq list|show|replay|purge``: the dead-letter queue for operators."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["dlq"]


def _runtime(ctx: click.Context) -> Any:
    from ..cli import _runtime as cli_runtime

    return cli_runtime(ctx)


def _domain(runtime: Any, name: str) -> str:
    try:
        return str(runtime.supervisor.domain(name).name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="DOMAIN") from None


@click.group(name="dlq")
def dlq() -> None:
    """Dead letters: messages the supervisor gave up on, kept whole for replay."""


@dlq.command(name="list")
@click.argument("domain")
@click.option("--limit", default=50, show_default=True, help="Newest entries to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx: click.Context, domain: str, limit: int, as_json: bool) -> None:
    """List DOMAIN's dead letters (oldest first)."""
    runtime = _runtime(ctx)
    entries = runtime.dlq.list(_domain(runtime, domain), limit=limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2, sort_keys=True))
        return
    if not entries:
        click.echo(f"no dead letters in {domain}")
        return
    for e in entries:
        click.echo(f"{e['id']}  {e.get('task')}  [{e.get('queue')}]  {e.get('exception')}  {e.get('reason')}")


@dlq.command()
@click.argument("domain")
@click.argument("task_id")
@click.pass_context
def show(ctx: click.Context, domain: str, task_id: str) -> None:
    """Show one dead letter in full (JSON); exit 1 when absent."""
    runtime = _runtime(ctx)
    entry = runtime.dlq.get(_domain(runtime, domain), task_id)
    if entry is None:
        click.echo(f"no dead letter {task_id} in {domain}", err=True)
        sys.exit(1)
    click.echo(json.dumps(entry, indent=2, sort_keys=True))


@dlq.command()
@click.argument("domain")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter of DOMAIN.")
@click.option("--force", is_flag=True, help="Replay even a task this app does not register.")
@click.pass_context
def replay(ctx: click.Context, domain: str, task_ids: tuple[str, ...], replay_all: bool, force: bool) -> None:
    """Publish dead letters onto their queues again, each exactly once; exit 1 if one was not found."""
    runtime = _runtime(ctx)
    name = _domain(runtime, domain)
    if replay_all:
        task_ids = tuple(e["id"] for e in runtime.dlq.list(name, limit=runtime.settings.dlq_max))
    if not task_ids:
        raise click.UsageError("name TASK_IDS or pass --all")
    missing = 0
    for task_id in task_ids:
        try:
            replayed = runtime.dlq.replay(runtime.app, name, task_id, force=force)
        except ValueError as exc:
            click.echo(str(exc), err=True)
            missing += 1
            continue
        if replayed is None:
            click.echo(f"no dead letter {task_id} in {name}", err=True)
            missing += 1
        else:
            click.echo(f"replayed {task_id}")
    if missing:
        sys.exit(1)


@dlq.command()
@click.argument("domain")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, domain: str, yes: bool) -> None:
    """Delete every dead letter of DOMAIN."""
    runtime = _runtime(ctx)
    name = _domain(runtime, domain)
    if not yes:
        click.confirm(f"delete {runtime.dlq.count(name)} dead letter(s) of {name}?", abort=True)
    click.echo(f"purged {runtime.dlq.purge(name)} dead letter(s) from {name}")
