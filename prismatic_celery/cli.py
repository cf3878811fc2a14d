"""``celery -A proj supervision ...``: the operator's command line (``celery.commands`` entry point)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from celery import Celery

from .errors import ConfigurationError
from .runtime import Runtime, get_runtime

__all__ = ["supervision"]


def _app(ctx: click.Context) -> Celery:
    app = getattr(ctx.obj, "app", None)
    if not isinstance(app, Celery):
        raise click.UsageError("run it as `celery -A proj supervision ...`")
    return app


def _runtime(ctx: click.Context) -> Runtime:
    try:
        runtime = get_runtime(_app(ctx))
    except ConfigurationError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
    if runtime is None:
        raise click.ClickException("prismatic-celery is not installed on this app (or prismatic_enabled is False)")
    return runtime


def _emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str) if as_json else human)


@click.group(name="supervision")
@click.pass_context
def supervision(ctx: click.Context) -> None:
    """prismatic-celery: inspect and steer the supervision tree."""


@supervision.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate every prismatic_* setting; exit 1 naming the first bad one."""
    runtime = _runtime(ctx)
    tree = runtime.supervisor
    click.echo(
        f"configuration OK: {len(tree.domain_list)} domains, {len(tree.queues)} supervised queues, "
        f"store {runtime.settings.store_url.split('@')[-1]}"
    )


def render_tree(tree: dict[str, Any]) -> str:
    """The tree as indented text, as the seed article draws it."""
    budget = tree["budget"]
    lines = [f"Supervisor (one_for_one, budget {budget['max_restarts']} in {budget['period_s']:g}s)"]
    for domain in tree["domains"]:
        db = domain["budget"]
        cap = f", concurrency {domain['concurrency']}" if domain["concurrency"] else ""
        spec = f"{domain['strategy']}, budget {db['max_restarts']} in {db['period_s']:g}s{cap}"
        lines.append(f"+-- {domain['name']} ({spec})")
        for child in domain["children"]:
            lines.append(f"    +-- {child['queue']} [{child['restart']}]")
    return "\n".join(lines)


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def tree(ctx: click.Context, as_json: bool) -> None:
    """Print the declared supervision tree."""
    described = _runtime(ctx).supervisor.describe()
    _emit(described, as_json, render_tree(described))


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """List workers registered in the store (heartbeat within the last few seconds)."""
    runtime = _runtime(ctx)
    found = [runtime.store.get_json(k) for k in runtime.store.scan(runtime.keys.pattern("worker"))]
    rows = [w for w in found if isinstance(w, dict)]
    human = "\n".join(
        f"{w.get('hostname')}  pid={w.get('pid')} pool={w.get('pool')} queues={','.join(w.get('queues') or [])}"
        for w in rows
    ) or "no workers registered"
    _emit(rows, as_json, human)
    if not rows:
        sys.exit(3)
