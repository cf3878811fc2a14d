"""The state, health, circuits and events reports as text for people (``--json`` prints the reports as
they are)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from .common import Report
from .tables import mib, na, table

__all__ = [
    "child_status",
    "render_circuits",
    "render_events",
    "render_health",
    "render_knowledge_line",
    "render_shed",
    "render_shed_queues",
    "render_state",
    "render_tree",
    "render_watch",
    "unreachable_line",
]


def render_tree(tree: Report) -> str:
    """The declared tree as indented text: the supervisor, each domain with its strategy and budget, its children."""
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


def child_status(child: Report) -> str:
    """A child's state in words: running, unserved, paused (why, by whom, for how long) or unknown."""
    if child.get("status") == "unknown":
        return "unknown"
    if not child["paused"]:
        return "running" if child.get("served", True) else "unserved (no live worker consumes it)"
    pause = child["pause"]
    return f"paused ({pause['reason']} by {pause['by']}, {pause['remaining_s']:.1f}s left)"


_SHED_MODES = {"park": "parked", "drop": "dropped"}


def render_shed(counts: Mapping[str, int] | None) -> str:
    """Shed messages per mode: ``3 parked / 1 dropped`` (``n/a`` when shedding reports nothing)."""
    if counts is None:
        return "n/a"
    return " / ".join(f"{n} {_SHED_MODES.get(mode, mode)}" for mode, n in counts.items()) or "none"


def render_state(state: Report) -> str:
    """The tree with each child's state, for people: one aligned table, a domain row above its children."""
    lines = [unreachable_line(state)] if state.get("state") == "unknown" else []
    rows: list[list[object]] = []
    for domain in state["domains"]:
        rows.append([domain["name"], domain["strategy"], "ESCALATED" if domain["escalated"] else "", "", "", ""])
        for child in domain["children"]:
            shed = render_shed(child["shed"]) if child.get("shed") is not None else ""
            rows.append([f"  {child['queue']}", child.get("restart", ""), child_status(child),
                         f"{na(child['restarts_in_window'])}/{na(child['restarts_total'])}", shed,
                         "HOTSPOT" if child["hotspot"] else ""])
    lines.append(table(["DOMAIN / CHILD", "STRATEGY", "STATE", "RESTARTS (window/total)", "SHED", "HOT"], rows,
                       fit=2))
    return "\n".join(lines)


def unreachable_line(report: Report) -> str:
    """The line a report read while the store does not answer starts with."""
    url = (report.get("store") or {}).get("url", "")
    return f"UNKNOWN: the store {url} does not answer; pauses, restarts, circuits and escalations cannot be read"


def render_health(health: Report) -> str:
    """The health report for people: score, tree, circuits, escalations, processes and memory."""
    workers = health.get("workers") or []
    where = (f"worker {health.get('hostname')}" if health.get("scope") == "worker"
             else f"cluster, {len(workers)} worker(s)")
    if health.get("state") == "unknown":
        return "\n".join([f"health UNKNOWN  ({where}, namespace {health['namespace']})", unreachable_line(health),
                          "", render_state(health).split("\n", 1)[1]])
    lines = [f"health {health['score']}/100  {health['state'].upper()}  ({where}, namespace {health['namespace']}, "
             f"{na(health.get('total_processes'))} processes)"]
    penalties = health.get("penalties") or []
    if penalties:
        lines.append("penalties: " + ", ".join(f"{p['reason']} x{p['count']} -{p['points']}" for p in penalties))
    lines.append("")
    rows: list[list[object]] = []
    for domain in health["domains"]:
        rows.append([domain["name"], domain["strategy"], domain["status"],
                     f"{domain['restarts_in_window']}/{domain['restarts_total']}", "",
                     mib(domain.get("memory_rss_bytes"))])
        for child in domain["children"]:
            rows.append([f"  {child['queue']}", child["restart"], child_status(child),
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


def render_shed_queues(shed: Report) -> str:
    """Shed messages per queue and mode, on one line (queues that shed nothing left out)."""
    queues = shed.get("queues") or {}
    shown = [f"{queue} {render_shed(counts)}" for queue, counts in sorted(queues.items()) if any(counts.values())]
    return f"{shed.get('total', 0)} total" + (f" ({', '.join(shown)})" if shown else "")


def render_circuits(circuits: Mapping[str, Report]) -> str:
    """Circuits as a table."""
    rows = [[name, c["state"].upper() if c["state"] != "closed" else "closed",
             f"{c['fail_counter']}/{na(c.get('fail_max'))}",
             f"{c['retry_after_s']:.1f}s" if c["state"] != "closed" else "", c.get("reason") or ""]
            for name, c in sorted(circuits.items())]
    return table(["CIRCUIT", "STATE", "FAILURES", "RETRY IN", "REASON"], rows)


def _pct(value: float | str | None) -> str:
    return "n/a" if value is None else f"{float(value):.1f}%"


def _rate(value: float | str | None) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def render_knowledge_line(knowledge: Report) -> str:
    """The knowledge metrics on one line."""
    mttr = knowledge.get("mean_time_to_recovery_s")
    return (f"{knowledge.get('total_lessons', 0)} lessons, auto-remediated {_pct(knowledge.get('auto_remediated_pct'))}"
            f" of known-pattern crashes, MTTR {na(mttr if mttr is None else round(float(mttr), 3), '{}s')}, "
            f"escalation rate {_rate(knowledge.get('escalation_rate'))}, "
            f"false positives {_rate(knowledge.get('false_positive_rate'))}")


def render_events(events: Sequence[Report]) -> str:
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


def render_watch(report: Report, interval: float) -> str:
    """One refresh of ``watch``: a header naming what it shows, the status table, the newest events."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    score = "UNKNOWN" if report.get("score") is None else f"{report['score']}/100 {str(report['state']).upper()}"
    header = (f"-- {stamp}  status of namespace {report.get('namespace')}, health {score}; every {interval:g}s "
              "(Ctrl-C to stop)")
    return f"{header}\n{render_state(report)}\n\n{render_events(report.get('events') or [])}"
