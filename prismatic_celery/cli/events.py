"""``celery -A proj supervision events``: the newest supervision events."""

from __future__ import annotations

import click

from ..observability.views import recent_events
from .common import emit, json_option, runtime_of
from .render import render_events

__all__ = ["events"]


@click.command()
@json_option
@click.option("--count", type=click.IntRange(1, 10000), default=20, show_default=True, help="Events listed.")
@click.pass_context
def events(ctx: click.Context, as_json: bool, count: int) -> None:
    """The newest supervision events of the capped stream (prismatic:{<ns>}:events), newest first."""
    found = recent_events(runtime_of(ctx), count)
    emit(found, as_json, render_events(found))
