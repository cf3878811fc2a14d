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


def tree_state(runtime: Runtime) -> dict[str, Any]:
    """Per-child state read from the store: pauses, restarts, hotspots and escalations."""
    from .engine.hotspots import is_hotspot
    from .engine.pauses import read_pauses

    store, keys, settings = runtime.store, runtime.keys, runtime.settings
    tree = runtime.supervisor
    pauses = read_pauses(store, keys, tree.queues)
    totals = store.hgetall(keys.key("restart-totals"))
    now = store.time()
    escalations = dict(zip([d.name for d in tree.domain_list],
                           store.get_many([keys.key("escalation", d.name) for d in tree.domain_list]), strict=True))
    described = tree.describe()
    for domain in described["domains"]:
        escalation = escalations.get(domain["name"])
        domain["escalated"] = isinstance(escalation, dict)
        for child in domain["children"]:
            queue = child["queue"]
            recent = store.window_count(keys.key("restarts", queue), now, settings.hotspot_window_s)
            pause = pauses.get(queue)
            child.update({
                "restarts_total": int(totals.get(queue, 0) or 0),
                "restarts_in_window": recent,
                "hotspot": is_hotspot(recent, settings.hotspot_restarts),
                "paused": pause is not None,
                "pause": None if pause is None else {"reason": pause.reason, "by": pause.by,
                                                     "remaining_s": round(max(0.0, pause.until - now), 3)},
            })
    described["escalated"] = any(d["escalated"] for d in described["domains"])
    return described


def render_state(state: dict[str, Any]) -> str:
    """The tree with each child's state, for people."""
    lines = []
    for domain in state["domains"]:
        flag = "  ESCALATED" if domain["escalated"] else ""
        lines.append(f"{domain['name']} ({domain['strategy']}){flag}")
        for child in domain["children"]:
            status = "paused" if child["paused"] else "running"
            if child["paused"]:
                pause = child["pause"]
                status += f" ({pause['reason']} by {pause['by']}, {pause['remaining_s']:.1f}s left)"
            hot = "  HOTSPOT" if child["hotspot"] else ""
            lines.append(f"  {child['queue']:<24} {status:<44} restarts {child['restarts_in_window']} recent / "
                         f"{child['restarts_total']} total{hot}")
    return "\n".join(lines)


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The tree with pauses, restarts and hotspots; exit 2 when a domain is escalated."""
    state = tree_state(_runtime(ctx))
    _emit(state, as_json, render_state(state))
    if state["escalated"]:
        sys.exit(2)


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def hotspots(ctx: click.Context, as_json: bool) -> None:
    """Children restarting more than the threshold within the window."""
    from .engine.hotspots import hotspots as find

    runtime = _runtime(ctx)
    settings = runtime.settings
    found = find(runtime.store, runtime.keys, runtime.supervisor, threshold=settings.hotspot_restarts,
                 window_s=settings.hotspot_window_s)
    rows = [{"domain": h.domain, "child": h.child, "restarts": h.restarts, "window_s": h.window_s} for h in found]
    human = "\n".join(f"{r['domain']}/{r['child']}: {r['restarts']} restarts in {r['window_s']:g}s" for r in rows)
    _emit(rows, as_json, human or "no hotspots")


@supervision.command()
@click.argument("domain")
@click.pass_context
def resume(ctx: click.Context, domain: str) -> None:
    """End every pause, cool-down and escalation of DOMAIN now (workers resume within a second)."""
    runtime = _runtime(ctx)
    try:
        found = runtime.supervisor.domain(domain)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="DOMAIN") from None
    keys = runtime.keys
    from .engine.pauses import clear_pauses

    cleared = clear_pauses(runtime.store, keys, found.queues)
    runtime.store.delete(keys.key("escalation", found.name), keys.key("cooldown", found.name))
    runtime.emit("resume", domain=found.name, queues=",".join(found.queues), reason="operator")
    runtime.broadcast_reconcile(pause=[])
    click.echo(f"resumed {found.name}: {cleared} paused queue(s) released")
