"""The commands that show the tree: ``check``, ``tree``, ``workers``, ``status``, ``health``, ``hotspots``,
``circuits`` and ``watch``.

Every one reads the store, so it reports what the workers, the Flower page and ``/metrics`` report; exit codes
as prismatic_celery/cli/common.py lists them.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import TypedDict

import click

from ..errors import ConfigurationError
from ..observability.health import get_tree_health
from ..observability.unknown import unknown_state
from ..observability.views import tree_state as _tree_state
from ..observability.workers import live_registrations
from ..runtime import Runtime
from .common import (
    DEFAULT_MIN_SCORE,
    EXIT_ERROR,
    EXIT_ESCALATED,
    EXIT_NO_WORKERS,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_UNKNOWN,
    Report,
    emit,
    json_option,
    runtime_of,
)
from .render import render_circuits, render_events, render_health, render_state, render_tree, render_watch
from .tables import table

__all__ = ["check", "circuits", "health", "health_exit_code", "hotspots", "status", "tree", "tree_state", "watch",
           "workers"]


class HotspotRow(TypedDict):
    """One hotspot as ``hotspots --json`` prints it."""

    domain: str
    child: str
    restarts: int
    window_s: float


def _store_line(runtime: Runtime) -> str:
    store = runtime.store
    shared = "shared by every worker" if store.shared else "in this process only: nothing is shared between workers"
    return f"store {store.display_url} ({shared})"


def _unreachable(runtime: Runtime) -> str:
    return (f"unknown: the store {runtime.store.display_url} does not answer; nothing about the tree can be known "
            "(see the warning above for the error)")


@click.command()
@click.option("--offline", is_flag=True, help="Validate the settings only; do not connect to the store.")
@json_option
@click.pass_context
def check(ctx: click.Context, offline: bool, as_json: bool) -> None:
    """Validate every prismatic_* setting and connect to the store; exit 1 naming the first bad setting,
    5 when the store does not answer."""
    try:
        runtime = runtime_of(ctx)
    except click.ClickException as exc:
        problem = exc.__cause__
        if not as_json or not isinstance(problem, ConfigurationError):
            raise
        emit({"ok": False, "setting": problem.setting, "problem": problem.problem}, True, "")
        sys.exit(EXIT_ERROR)
    tree = runtime.supervisor
    reachable = None if offline else runtime.store.ping()
    data = {"ok": reachable is not False, "domains": len(tree.domain_list), "queues": len(tree.queues),
            "store": runtime.store.display_url, "shared": runtime.store.shared, "reachable": reachable}
    human = f"configuration OK: {len(tree.domain_list)} domains, {len(tree.queues)} supervised queues, "
    human += _store_line(runtime) + {None: ", not contacted (--offline)", True: ", answering"}.get(
        reachable, f"\n{_unreachable(runtime)}")
    emit(data, as_json, human)
    if reachable is False:
        sys.exit(EXIT_UNKNOWN)


@click.command()
@json_option
@click.pass_context
def tree(ctx: click.Context, as_json: bool) -> None:
    """Print the declared supervision tree."""
    described = runtime_of(ctx).supervisor.describe()
    emit(described, as_json, render_tree(described))


@click.command()
@json_option
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """List workers registered in the store (heartbeat within the last few seconds); exit 3 when none, 5 when
    the store does not answer."""
    runtime = runtime_of(ctx)
    if not runtime.store.ping():
        emit({"state": "unknown", "workers": None}, as_json, _unreachable(runtime))
        sys.exit(EXIT_UNKNOWN)
    rows = live_registrations(runtime.store, runtime.keys, runtime.settings)
    human = table(["WORKER", "PID", "POOL", "CONCURRENCY", "DOMAINS", "QUEUES"],
                  [[w.get("hostname"), w.get("pid"), w.get("pool"), w.get("concurrency"),
                    ",".join(w.get("domains") or []) or "-", ",".join(w.get("queues") or [])] for w in rows],
                  fit=5) if rows else "no workers registered"
    emit(rows, as_json, human)
    if not rows:
        sys.exit(EXIT_NO_WORKERS)


def tree_state(runtime: Runtime) -> Report:
    """Per-child state read from the store: pauses, restarts, hotspots, escalations and whether a live worker
    serves each child; every child ``unknown`` when the store does not answer."""
    if not runtime.store.ping():
        return unknown_state(runtime)
    state = _tree_state(runtime)
    return unknown_state(runtime) if runtime.store.degraded else state


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The tree with pauses, restarts and hotspots; exit 2 when a domain is escalated, 5 when the store does
    not answer."""
    state = tree_state(runtime_of(ctx))
    emit(state, as_json, render_state(state))
    if state.get("state") == "unknown":
        sys.exit(EXIT_UNKNOWN)
    if state["escalated"]:
        sys.exit(EXIT_ESCALATED)


def health_exit_code(health: Report, min_score: int = DEFAULT_MIN_SCORE) -> int:
    """5 when unknown (the store does not answer), 2 when escalated, 4 when the score is below ``min_score``,
    else 0."""
    if health.get("state") == "unknown" or health.get("score") is None:
        return EXIT_UNKNOWN
    if health.get("escalated"):
        return EXIT_ESCALATED
    if int(health["score"]) < min_score:
        return EXIT_UNHEALTHY
    return EXIT_OK


_MIN_SCORE = click.option("--min-score", type=click.IntRange(0, 100), default=DEFAULT_MIN_SCORE, show_default=True,
                          help="Exit 4 when the health score is below this.")


@click.command()
@json_option
@_MIN_SCORE
@click.option("--events", "events", type=click.IntRange(0, 1000), default=0, help="Also list the newest N events.")
@click.pass_context
def health(ctx: click.Context, as_json: bool, min_score: int, events: int) -> None:
    """Cluster-wide tree health and score 0-100; exit 2 escalated, 4 below --min-score, 5 unknown (store down)."""
    runtime = runtime_of(ctx)
    report = get_tree_health(runtime, events=events)
    human = render_health(report)
    if events:
        human += "\n\n" + render_events(report.get("events") or [])
    emit(report, as_json, human)
    sys.exit(health_exit_code(report, min_score))


@click.command()
@json_option
@click.pass_context
def hotspots(ctx: click.Context, as_json: bool) -> None:
    """Children restarting more than the threshold within the window."""
    from ..supervision.hotspots import hotspots as find

    runtime = runtime_of(ctx)
    settings = runtime.settings
    found = find(runtime.store, runtime.keys, runtime.supervisor, threshold=settings.hotspot_restarts,
                 window_s=settings.hotspot_window_s)
    rows = [HotspotRow(domain=h.domain, child=h.child, restarts=h.restarts, window_s=h.window_s) for h in found]
    human = table(["DOMAIN", "CHILD", "RESTARTS", "WINDOW"],
                  [[r["domain"], r["child"], r["restarts"], f"{r['window_s']:g}s"] for r in rows])
    emit(rows, as_json, human if rows else "no hotspots")


@click.command()
@json_option
@click.pass_context
def circuits(ctx: click.Context, as_json: bool) -> None:
    """Every circuit breaker's shared state (declared ones and any found in the store)."""
    from ..observability.views import circuits_view

    found = circuits_view(runtime_of(ctx))
    emit(found, as_json, render_circuits(found) if found else "no circuits")


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", type=click.IntRange(min=0), default=0, help="Stop after N refreshes (0: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document per line (NDJSON) instead of a screen.")
@_MIN_SCORE
@click.pass_context
def watch(ctx: click.Context, interval: float, count: int, as_json: bool, min_score: int) -> None:
    """Refresh the status live (each child's state, as `status` shows it, under the health score, then the newest
    events); --json prints the health report, which holds it. Exits with the last refresh's code (2 escalated,
    4 below --min-score, 5 unknown)."""
    runtime = runtime_of(ctx)
    interactive = sys.stdout.isatty() and not as_json
    code = EXIT_OK
    shown = 0
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            report = get_tree_health(runtime, events=5)
            code = health_exit_code(report, min_score)
            if as_json:
                click.echo(json.dumps(report, sort_keys=True, default=str))
            else:
                if interactive:
                    click.clear()
                click.echo(render_watch(report, interval) + "\n")
            shown += 1
            if count and shown >= count:
                break
            time.sleep(interval)
    sys.exit(code)
