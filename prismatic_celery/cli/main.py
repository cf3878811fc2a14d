"""``celery -A proj supervision ...``: the operator's command line (``celery.commands`` entry point).

Every command that reads state reads it from the store, so it reports what
the workers, the Flower page and ``/metrics`` report. ``--json`` prints the
same data for scripts. Exit codes:

| Code | Meaning |
|---|---|
| 0 | done; the tree is not escalated (and, for ``health``/``watch``, the score is at least ``--min-score``) |
| 1 | an error: invalid configuration, plugin not installed, unknown domain or queue |
| 2 | a domain is escalated (``status``, ``health``, ``watch``); also click's code for a usage error |
| 3 | no worker registered (``workers``) |
| 4 | the health score is below ``--min-score`` (``health``, ``watch``; default 50, i.e. ``critical``) |
| 5 | unknown: the store does not answer, so nothing can be said (``check``, ``status``, ``health``, ``watch``, |
|   | ``workers``) |
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from celery import Celery

from ..errors import ConfigurationError
from ..log import get_logger, log_event
from ..observability.health import get_tree_health
from ..observability.unknown import unknown_state
from ..observability.views import recent_events
from ..observability.views import tree_state as _tree_state
from ..observability.workers import live_registrations
from ..runtime import Runtime, get_runtime

__all__ = [
    "EXIT_ERROR",
    "EXIT_ESCALATED",
    "EXIT_NO_WORKERS",
    "EXIT_OK",
    "EXIT_UNHEALTHY",
    "EXIT_UNKNOWN",
    "health_exit_code",
    "render_health",
    "render_shed",
    "render_shed_queues",
    "render_state",
    "render_tree",
    "supervision",
    "tree_state",
]

logger = get_logger("cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ESCALATED = 2
EXIT_NO_WORKERS = 3
EXIT_UNHEALTHY = 4
EXIT_UNKNOWN = 5
DEFAULT_MIN_SCORE = 50


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


#: The narrowest a column fitted to the terminal gets (it is cut with "..." below its content's width).
MIN_FIT_WIDTH = 20


def terminal_width() -> int | None:
    """The terminal's width in columns when standard output is one, else None (a pipe or file gets every
    character: nothing is cut for a script)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, fit: int | None = None,
          width: int | None = None) -> str:
    """Left-aligned columns sized to their content, separated by two spaces (a header line, then one line per
    row). ``fit`` names the column that gives way when the table is wider than ``width`` (default: the
    terminal's width; no limit when the output is not a terminal): its cells are cut, ending in "..."."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    limit = terminal_width() if width is None else width
    if fit is not None and limit is not None:
        others = sum(w for i, w in enumerate(widths) if i != fit) + 2 * (len(widths) - 1)
        room = max(MIN_FIT_WIDTH, limit - others)
        if widths[fit] > room:
            widths[fit] = room
            for r in cells:
                if len(r[fit]) > room:
                    r[fit] = r[fit][:room - 3] + "..."
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _na(value: Any, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1048576:.1f} MiB"


@click.group(name="supervision")
@click.pass_context
def supervision(ctx: click.Context) -> None:
    """prismatic-celery: inspect and steer the supervision tree."""


def _store_line(runtime: Runtime) -> str:
    store = runtime.store
    shared = "shared by every worker" if store.shared else "in this process only: nothing is shared between workers"
    return f"store {store.display_url} ({shared})"


def _unreachable(runtime: Runtime) -> str:
    return (f"unknown: the store {runtime.store.display_url} does not answer; nothing about the tree can be known "
            "(see the warning above for the error)")


@supervision.command()
@click.option("--offline", is_flag=True, help="Validate the settings only; do not connect to the store.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, offline: bool, as_json: bool) -> None:
    """Validate every prismatic_* setting and connect to the store; exit 1 naming the first bad setting,
    5 when the store does not answer."""
    try:
        runtime = _runtime(ctx)
    except click.ClickException as exc:
        problem = exc.__cause__
        if not as_json or not isinstance(problem, ConfigurationError):
            raise
        _emit({"ok": False, "setting": problem.setting, "problem": problem.problem}, True, "")
        sys.exit(EXIT_ERROR)
    tree = runtime.supervisor
    reachable = None if offline else runtime.store.ping()
    data = {"ok": reachable is not False, "domains": len(tree.domain_list), "queues": len(tree.queues),
            "store": runtime.store.display_url, "shared": runtime.store.shared, "reachable": reachable}
    human = f"configuration OK: {len(tree.domain_list)} domains, {len(tree.queues)} supervised queues, "
    human += _store_line(runtime) + {None: ", not contacted (--offline)", True: ", answering"}.get(
        reachable, f"\n{_unreachable(runtime)}")
    _emit(data, as_json, human)
    if reachable is False:
        sys.exit(EXIT_UNKNOWN)


def render_tree(tree: dict[str, Any]) -> str:
    """The tree as indented text, as the seed article draws it."""
    budget = tree["budget"]
    lines = [f"Supervisor (one_for_one, budget {budget['max_restarts']} in {budget['period_s']:g}s)"]
    for domain in tree["domains"]:
        db = domain["budget"]
        cap = f", concurrency {domain['concurrency']}" if domain["concurrency"] else ""
        if domain.get("cluster_concurrency"):
            cap += f", cluster concurrency {domain['cluster_concurrency']}"
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
    """List workers registered in the store (heartbeat within the last few seconds); exit 3 when none, 5 when
    the store does not answer."""
    runtime = _runtime(ctx)
    if not runtime.store.ping():
        _emit({"state": "unknown", "workers": None}, as_json, _unreachable(runtime))
        sys.exit(EXIT_UNKNOWN)
    rows = live_registrations(runtime.store, runtime.keys, runtime.settings)
    human = table(["WORKER", "PID", "POOL", "CONCURRENCY", "DOMAINS", "QUEUES"],
                  [[w.get("hostname"), w.get("pid"), w.get("pool"), w.get("concurrency"),
                    ",".join(w.get("domains") or []) or "-", ",".join(w.get("queues") or [])] for w in rows],
                  fit=5) if rows else "no workers registered"
    _emit(rows, as_json, human)
    if not rows:
        sys.exit(EXIT_NO_WORKERS)


def tree_state(runtime: Runtime) -> dict[str, Any]:
    """Per-child state read from the store: pauses, restarts, hotspots, escalations and whether a live worker
    serves each child; every child ``unknown`` when the store does not answer."""
    if not runtime.store.ping():
        return unknown_state(runtime)
    state = _tree_state(runtime)
    return unknown_state(runtime) if runtime.store.degraded else state


def _child_status(child: Mapping[str, Any]) -> str:
    if child.get("status") == "unknown":
        return "unknown"
    if not child["paused"]:
        return "running" if child.get("served", True) else "unserved (no live worker consumes it)"
    pause = child["pause"]
    return f"paused ({pause['reason']} by {pause['by']}, {pause['remaining_s']:.1f}s left)"


_SHED_MODES = {"park": "parked", "drop": "dropped"}


def render_shed(counts: Mapping[str, Any] | None) -> str:
    """Shed messages per mode: ``3 parked / 1 dropped`` (``n/a`` when shedding reports nothing)."""
    if counts is None:
        return "n/a"
    return " / ".join(f"{n} {_SHED_MODES.get(mode, mode)}" for mode, n in counts.items()) or "none"


def render_state(state: Mapping[str, Any]) -> str:
    """The tree with each child's state, for people: one aligned table, a domain row above its children."""
    lines = [_unreachable_line(state)] if state.get("state") == "unknown" else []
    rows: list[list[Any]] = []
    for domain in state["domains"]:
        rows.append([domain["name"], domain["strategy"], "ESCALATED" if domain["escalated"] else "", "", "", ""])
        for child in domain["children"]:
            shed = render_shed(child["shed"]) if child.get("shed") is not None else ""
            rows.append([f"  {child['queue']}", child.get("restart", ""), _child_status(child),
                         f"{_na(child['restarts_in_window'])}/{_na(child['restarts_total'])}", shed,
                         "HOTSPOT" if child["hotspot"] else ""])
    lines.append(table(["DOMAIN / CHILD", "STRATEGY", "STATE", "RESTARTS (window/total)", "SHED", "HOT"], rows,
                       fit=2))
    return "\n".join(lines)


def _unreachable_line(report: Mapping[str, Any]) -> str:
    url = (report.get("store") or {}).get("url", "")
    return f"UNKNOWN: the store {url} does not answer; pauses, restarts, circuits and escalations cannot be read"


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The tree with pauses, restarts and hotspots; exit 2 when a domain is escalated, 5 when the store does
    not answer."""
    state = tree_state(_runtime(ctx))
    _emit(state, as_json, render_state(state))
    if state.get("state") == "unknown":
        sys.exit(EXIT_UNKNOWN)
    if state["escalated"]:
        sys.exit(EXIT_ESCALATED)


def render_health(health: Mapping[str, Any]) -> str:
    """The health report for people: score, tree, circuits, escalations, processes and memory."""
    workers = health.get("workers") or []
    where = (f"worker {health.get('hostname')}" if health.get("scope") == "worker"
             else f"cluster, {len(workers)} worker(s)")
    if health.get("state") == "unknown":
        return "\n".join([f"health UNKNOWN  ({where}, namespace {health['namespace']})", _unreachable_line(health),
                          "", render_state(health).split("\n", 1)[1]])
    lines = [f"health {health['score']}/100  {health['state'].upper()}  ({where}, namespace {health['namespace']}, "
             f"{_na(health.get('total_processes'))} processes)"]
    penalties = health.get("penalties") or []
    if penalties:
        lines.append("penalties: " + ", ".join(f"{p['reason']} x{p['count']} -{p['points']}" for p in penalties))
    lines.append("")
    rows: list[list[Any]] = []
    for domain in health["domains"]:
        rows.append([domain["name"], domain["strategy"], domain["status"],
                     f"{domain['restarts_in_window']}/{domain['restarts_total']}", "",
                     _mib(domain.get("memory_rss_bytes"))])
        for child in domain["children"]:
            rows.append([f"  {child['queue']}", child["restart"], _child_status(child),
                         f"{child['restarts_in_window']}/{child['restarts_total']}",
                         "HOTSPOT" if child["hotspot"] else "", ""])
    lines.append(table(["DOMAIN / CHILD", "STRATEGY", "STATE", "RESTARTS (window/total)", "HOT", "MEMORY"], rows))
    lines.append("")
    circuits = health.get("circuits") or {}
    if circuits:
        lines.append(render_circuits(circuits))
    else:
        lines.append("circuits: none")
    escalations = health.get("escalations") or []
    lines.append("escalations: " + (", ".join(f"{e['domain']} ({e['reason']})" for e in escalations) or "none"))
    shed = health.get("shed")
    lines.append("shed: " + ("n/a" if shed is None else render_shed_queues(shed)))
    knowledge = health.get("knowledge")
    lines.append("knowledge: " + ("n/a" if knowledge is None else render_knowledge_line(knowledge)))
    return "\n".join(lines)


def render_shed_queues(shed: Mapping[str, Any]) -> str:
    """Shed messages per queue and mode, on one line (queues that shed nothing left out)."""
    queues = shed.get("queues") or {}
    shown = [f"{queue} {render_shed(counts)}" for queue, counts in sorted(queues.items()) if any(counts.values())]
    return f"{shed.get('total', 0)} total" + (f" ({', '.join(shown)})" if shown else "")


def render_circuits(circuits: Mapping[str, Mapping[str, Any]]) -> str:
    """Circuits as a table."""
    rows = [[name, c["state"].upper() if c["state"] != "closed" else "closed",
             f"{c['fail_counter']}/{_na(c.get('fail_max'))}",
             f"{c['retry_after_s']:.1f}s" if c["state"] != "closed" else "", c.get("reason") or ""]
            for name, c in sorted(circuits.items())]
    return table(["CIRCUIT", "STATE", "FAILURES", "RETRY IN", "REASON"], rows)


def render_knowledge_line(knowledge: Mapping[str, Any]) -> str:
    """The knowledge metrics on one line."""
    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{float(value):.1f}%"

    def rate(value: Any) -> str:
        return "n/a" if value is None else f"{100 * float(value):.1f}%"

    mttr = knowledge.get("mean_time_to_recovery_s")
    return (f"{knowledge.get('total_lessons', 0)} lessons, auto-remediated {pct(knowledge.get('auto_remediated_pct'))}"
            f" of known-pattern crashes, MTTR {_na(mttr if mttr is None else round(float(mttr), 3), '{}s')}, "
            f"escalation rate {rate(knowledge.get('escalation_rate'))}, "
            f"false positives {rate(knowledge.get('false_positive_rate'))}")


def health_exit_code(health: Mapping[str, Any], min_score: int = DEFAULT_MIN_SCORE) -> int:
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


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_MIN_SCORE
@click.option("--events", "events", type=click.IntRange(0, 1000), default=0, help="Also list the newest N events.")
@click.pass_context
def health(ctx: click.Context, as_json: bool, min_score: int, events: int) -> None:
    """Cluster-wide tree health and score 0-100; exit 2 escalated, 4 below --min-score, 5 unknown (store down)."""
    runtime = _runtime(ctx)
    report = get_tree_health(runtime, events=events)
    human = render_health(report)
    if events:
        human += "\n\n" + render_events(report.get("events") or [])
    _emit(report, as_json, human)
    sys.exit(health_exit_code(report, min_score))


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def hotspots(ctx: click.Context, as_json: bool) -> None:
    """Children restarting more than the threshold within the window."""
    from ..supervision.hotspots import hotspots as find

    runtime = _runtime(ctx)
    settings = runtime.settings
    found = find(runtime.store, runtime.keys, runtime.supervisor, threshold=settings.hotspot_restarts,
                 window_s=settings.hotspot_window_s)
    rows = [{"domain": h.domain, "child": h.child, "restarts": h.restarts, "window_s": h.window_s} for h in found]
    human = table(["DOMAIN", "CHILD", "RESTARTS", "WINDOW"],
                  [[r["domain"], r["child"], r["restarts"], f"{r['window_s']:g}s"] for r in rows])
    _emit(rows, as_json, human if rows else "no hotspots")


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def circuits(ctx: click.Context, as_json: bool) -> None:
    """Every circuit breaker's shared state (declared ones and any found in the store)."""
    from ..observability.views import circuits_view

    found = circuits_view(_runtime(ctx))
    _emit(found, as_json, render_circuits(found) if found else "no circuits")


def render_events(events: Sequence[Mapping[str, Any]]) -> str:
    """Recent supervision events, newest first."""
    if not events:
        return "no recent events"
    rows = []
    for event in events:
        at = event.get("time")
        try:
            when = time.strftime("%H:%M:%S", time.localtime(float(at))) if at else ""
        except (TypeError, ValueError):
            when = str(at)
        detail = " ".join(f"{k}={v}" for k, v in event.items() if k not in {"id", "type", "time", "domain", "child"})
        rows.append([when, event.get("type"), event.get("domain", ""), event.get("child", ""), detail])
    return table(["TIME", "TYPE", "DOMAIN", "CHILD", "DETAIL"], rows, fit=4)


@supervision.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--count", type=click.IntRange(1, 10000), default=20, show_default=True, help="Events listed.")
@click.pass_context
def events(ctx: click.Context, as_json: bool, count: int) -> None:
    """The newest supervision events of the capped stream (prismatic:{<ns>}:events), newest first."""
    found = recent_events(_runtime(ctx), count)
    _emit(found, as_json, render_events(found))


@supervision.command()
@click.argument("target")
@click.option("--for", "duration_s", type=click.FloatRange(min=0.001), default=None,
              help="Seconds (default: prismatic_cooldown_max_s).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def pause(ctx: click.Context, target: str, duration_s: float | None, as_json: bool) -> None:
    """Pause TARGET (a domain or a child's queue) on every worker: a manual pause record that expires."""
    from ..worker.control import UnknownTargetError, pause_target

    runtime = _runtime(ctx)
    try:
        found = pause_target(runtime, target, duration_s, by="operator via cli")
    except UnknownTargetError as exc:
        raise click.ClickException(str(exc)) from None
    seconds = runtime.settings.cooldown_max_s if duration_s is None else duration_s
    _emit({"domain": found.domain, "queues": list(found.queues), "seconds": seconds}, as_json,
          f"paused {','.join(found.queues)} of {found.domain} for {seconds:g}s")


@supervision.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def resume(ctx: click.Context, target: str, as_json: bool) -> None:
    """End the pauses of TARGET now; for a domain also its cool-down and escalation (workers resume within a second)."""
    from ..worker.control import UnknownTargetError, resume_target

    runtime = _runtime(ctx)
    try:
        found, cleared = resume_target(runtime, target, by="operator via cli")
    except UnknownTargetError as exc:
        raise click.ClickException(str(exc)) from None
    _emit({"domain": found.domain, "queues": list(found.queues), "released": cleared}, as_json,
          f"resumed {found.domain if found.whole_domain else found.queues[0]}: {cleared} paused queue(s) released")


@supervision.command()
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
    runtime = _runtime(ctx)
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


def render_watch(report: Mapping[str, Any], interval: float) -> str:
    """One refresh of ``watch``: a header naming what it shows, the status table, the newest events."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    score = "UNKNOWN" if report.get("score") is None else f"{report['score']}/100 {str(report['state']).upper()}"
    header = (f"-- {stamp}  status of namespace {report.get('namespace')}, health {score}; every {interval:g}s "
              "(Ctrl-C to stop)")
    return f"{header}\n{render_state(report)}\n\n{render_events(report.get('events') or [])}"


@supervision.command()
@click.option("--port", type=click.IntRange(0, 65535), default=9808, show_default=True, help="TCP port (0: any).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--json", "as_json", is_flag=True, help="Print the address served as JSON.")
@click.pass_context
def exporter(ctx: click.Context, port: int, address: str, as_json: bool) -> None:
    """Serve the supervision metrics for Prometheus at http://ADDRESS:PORT/metrics (for deployments without Flower)."""
    runtime = _runtime(ctx)
    try:
        from ..observability.flower.metrics import make_server
    except ImportError as exc:
        raise click.ClickException(f"{exc} (install prismatic-celery[prometheus])") from None
    server = make_server(runtime.app, port=port, address=address)
    bound = server.server_address[1]
    url = f"http://{address}:{bound}/metrics"
    _emit({"url": url, "namespace": runtime.keys.namespace}, as_json,
          f"prismatic exporter: {url} (namespace {runtime.keys.namespace})")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@supervision.command(name="flowerconfig")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def flowerconfig(as_json: bool) -> None:
    """Print the path of the shipped Flower config.

    Use: ``celery -A proj flower --conf="$(celery -A proj supervision flowerconfig)"``.
    """
    spec = importlib.util.find_spec("prismatic_celery.observability.flower.flowerconfig")
    if spec is None or spec.origin is None:
        raise click.ClickException("prismatic_celery.observability.flower.flowerconfig is missing from this "
                                   "installation")
    path = str(Path(spec.origin))
    _emit({"path": path}, as_json, path)


def _add_optional_groups() -> None:
    """Subcommand groups built elsewhere (``dlq``, ``shed``, ``lessons``), added when their modules exist."""
    for module, attr in (("prismatic_celery.cli.remediation", "dlq"), ("prismatic_celery.cli.shedding", "shed"),
                         ("prismatic_celery.cli.lessons", "lessons")):
        try:
            if importlib.util.find_spec(module) is None:
                continue
            group = getattr(importlib.import_module(module), attr, None)
        except Exception as exc:  # a broken optional group must not take the other commands down
            log_event(logging.ERROR, "cli-group-failed", logger, module=module, error=repr(exc)[:200])
            continue
        if isinstance(group, click.Command):
            supervision.add_command(group, attr)


_add_optional_groups()
