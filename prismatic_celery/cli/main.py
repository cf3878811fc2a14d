"""``celery -A proj supervision ...``: the operator's command line (``celery.commands`` entry point).

The group gathers the commands of this package: the tree's state (prismatic_celery/cli/status.py), events
(events.py), pauses (pauses.py), the exporter and the Flower config (serve.py), and the groups ``dlq``
(remediation.py), ``shed`` (shedding.py) and ``lessons`` (lessons.py). ``--json`` prints the same data for
scripts; the exit codes are listed in prismatic_celery/cli/common.py. The names below stay importable from
here, where they were first defined.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import click

from ..log import get_logger, log_event
from .common import EXIT_ERROR, EXIT_ESCALATED, EXIT_NO_WORKERS, EXIT_OK, EXIT_UNHEALTHY, EXIT_UNKNOWN
from .events import events
from .pauses import pause, resume
from .render import render_health, render_shed, render_shed_queues, render_state, render_tree
from .serve import exporter, flowerconfig
from .status import check, circuits, health, health_exit_code, hotspots, status, tree, tree_state, watch, workers

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


@click.group(name="supervision")
@click.pass_context
def supervision(ctx: click.Context) -> None:
    """prismatic-celery: inspect and steer the supervision tree."""


def _add_commands() -> None:
    """The commands of this package's modules (each defined with ``click.command``, so none imports this one)."""
    for command in (check, tree, workers, status, health, hotspots, circuits, events, pause, resume, watch,
                    exporter, flowerconfig):
        supervision.add_command(command)


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


_add_commands()
_add_optional_groups()
