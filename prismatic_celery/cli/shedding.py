"""``celery -A proj supervision shed ...``: see and act on shed messages.

* ``shed list [QUEUE]``: every supervised queue's shedding state, last sampled
  backlog, policy and parked count; with QUEUE, its oldest parked messages.
* ``shed replay QUEUE... | --all``: publish parked messages again, oldest
  first, each exactly once. A queue that sheds right now is skipped unless
  ``--force`` (replayed messages are never shed again, so they would run while
  the queue is overloaded). Exit 1 when a publish failed, 2 when a queue was
  skipped.
* ``shed purge QUEUE... | --all --yes``: delete parked messages for good.

Every command takes ``--json`` for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TypedDict

import click

from ..admission.shedding import ShedStatus, peek, purge, queue_policies, read_states, replay
from ..runtime import Runtime
from .common import EXIT_ERROR, emit, json_option, runtime_of

__all__ = ["shed"]

#: ``shed replay``: a queue was skipped because it sheds now (and no --force).
EXIT_SKIPPED = 2


class _Replayed(TypedDict):
    queue: str
    replayed: int


class ReplayRow(_Replayed, total=False):
    """One queue of ``shed replay --json``: skipped because it sheds now (``skipped``, ``backlog``), or
    replayed (``put_back``, ``skipped_corrupt``, ``error``)."""

    skipped: str
    backlog: int
    put_back: int
    skipped_corrupt: int
    error: str | None


def _runtime(ctx: click.Context) -> Runtime:
    return runtime_of(ctx, "supervision shed")


def _status(runtime: Runtime) -> ShedStatus:
    found = getattr(runtime, "shedding", None)
    if isinstance(found, ShedStatus):
        return found
    return ShedStatus(runtime.store, runtime.keys, runtime.supervisor,
                      queue_policies(runtime.settings, runtime.supervisor))


def _queues(runtime: Runtime, queues: Sequence[str], every: bool) -> list[str]:
    known = list(runtime.supervisor.queues)
    if every:
        return known
    if not queues:
        raise click.UsageError("name at least one QUEUE, or pass --all")
    for queue in queues:
        if queue not in known:
            raise click.BadParameter(f"{queue!r} is not a supervised queue; known: {', '.join(known) or 'none'}",
                                     param_hint="QUEUE")
    return list(dict.fromkeys(queues))


def _when(ts: object) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%H:%M:%S")


@click.group(name="shed")
def shed() -> None:
    """Load shedding: queues in shedding state, parked messages, replay and purge."""


@shed.command(name="list")
@click.argument("queue", required=False)
@click.option("--limit", default=20, show_default=True, help="Parked messages shown for QUEUE.")
@json_option
@click.pass_context
def list_(ctx: click.Context, queue: str | None, limit: int, as_json: bool) -> None:
    """Shedding state of every supervised queue, or QUEUE's oldest parked messages."""
    runtime = _runtime(ctx)
    if queue is not None:
        _queues(runtime, [queue], False)
        parked = peek(runtime.store, runtime.keys, queue, limit=limit)
        human = "\n".join(
            f"{p.get('id')}  {p.get('task')}  importance={p.get('importance')} parked {_when(p.get('parked_at'))}"
            f"  args={json.dumps(p.get('args'))[:60]}"
            for p in parked
        ) or f"no parked messages in {queue}"
        emit(parked, as_json, human)
        return
    rows = _status(runtime).overview()
    lines = [f"{'queue':<24} {'state':<9} {'backlog':>8} {'threshold':>9} {'resume':>7} {'cutoff':>6} "
             f"{'mode':<5} {'parked':>7} {'dropped':>8} {'replayed':>8}"]
    for row in rows:
        totals = row["totals"]
        backlog = "-" if row["backlog"] is None else str(row["backlog"])
        lines.append(f"{row['queue']:<24} {'SHEDDING' if row['shedding'] else 'ok':<9} {backlog:>8} "
                     f"{row['threshold']:>9} {row['resume_below']:>7} {row['cutoff']:>6} {row['mode']:<5} "
                     f"{row['parked_now']:>7} {totals['dropped']:>8} {totals['replayed']:>8}")
    emit(rows, as_json, "\n".join(lines))


@shed.command(name="replay")
@click.argument("queues", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every supervised queue.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many messages per queue.")
@click.option("--force", is_flag=True, help="Replay into a queue that sheds right now.")
@json_option
@click.pass_context
def replay_(ctx: click.Context, queues: tuple[str, ...], every: bool, limit: int | None, force: bool,
            as_json: bool) -> None:
    """Publish parked messages again (same id, arguments, queue and priority), each exactly once."""
    runtime = _runtime(ctx)
    chosen = _queues(runtime, queues, every)
    shedding = read_states(runtime.store, runtime.keys, chosen)
    rows: list[ReplayRow] = []
    failed = skipped = False
    for queue in chosen:
        if queue in shedding and not force:
            state = shedding[queue]
            rows.append(ReplayRow(queue=queue, replayed=0, skipped="shedding", backlog=state.backlog))
            skipped = True
            continue
        report = replay(runtime.app, runtime.store, runtime.keys, queue, limit=limit)
        rows.append(ReplayRow(queue=queue, replayed=report.replayed, put_back=report.put_back,
                              skipped_corrupt=report.skipped_corrupt, error=report.error))
        failed = failed or report.error is not None
    human = "\n".join(
        f"{r['queue']}: skipped, it sheds now (backlog {r['backlog']}); use --force" if r.get("skipped")
        else f"{r['queue']}: replayed {r['replayed']}" + (f", {r['put_back']} put back: {r['error']}"
                                                          if r.get("error") else "")
        for r in rows
    )
    emit(rows, as_json, human)
    if failed:
        sys.exit(EXIT_ERROR)
    if skipped:
        sys.exit(EXIT_SKIPPED)


@shed.command(name="purge")
@click.argument("queues", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every supervised queue.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def purge_(ctx: click.Context, queues: tuple[str, ...], every: bool, yes: bool, as_json: bool) -> None:
    """Delete parked messages for good (they will never run)."""
    runtime = _runtime(ctx)
    chosen = _queues(runtime, queues, every)
    if not yes:
        click.confirm(f"Delete the parked messages of {', '.join(chosen)} for good?", abort=True)
    rows = [{"queue": q, "purged": purge(runtime.store, runtime.keys, q)} for q in chosen]
    emit(rows, as_json, "\n".join(f"{r['queue']}: purged {r['purged']}" for r in rows))
