"""What every ``celery -A proj supervision ...`` command shares: finding the app's runtime, the ``--json``
option and its emission, and the exit codes.

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

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from celery import Celery

from ..errors import ConfigurationError
from ..runtime import Runtime, get_runtime

__all__ = [
    "DEFAULT_MIN_SCORE",
    "EXIT_ERROR",
    "EXIT_ESCALATED",
    "EXIT_NO_WORKERS",
    "EXIT_OK",
    "EXIT_UNHEALTHY",
    "EXIT_UNKNOWN",
    "Report",
    "emit",
    "json_option",
    "runtime_of",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ESCALATED = 2
EXIT_NO_WORKERS = 3
EXIT_UNHEALTHY = 4
EXIT_UNKNOWN = 5
DEFAULT_MIN_SCORE = 50

#: A JSON object as the views of prismatic_celery/observability/health.py return it (the tree state, the
#: health report, a circuit, an event, a worker's registration): the commands print it and read the fields
#: they show. Its values are typed by those views, not here.
Report = Mapping[str, Any]

_F = TypeVar("_F", bound=Callable[..., None])


def json_option(function: _F) -> _F:
    """The ``--json`` flag most commands take (passed as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(function)


def runtime_of(ctx: click.Context, command: str = "supervision") -> Runtime:
    """The runtime of the app ``celery -A proj`` loaded; a usage error outside ``celery``, exit 1 when the
    configuration is invalid or the plugin is not installed."""
    app = getattr(ctx.obj, "app", None)
    if not isinstance(app, Celery):
        raise click.UsageError(f"run it as `celery -A proj {command} ...`")
    try:
        runtime = get_runtime(app)
    except ConfigurationError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
    if runtime is None:
        raise click.ClickException("prismatic-celery is not installed on this app (or prismatic_enabled is False)")
    return runtime


def emit(data: object, as_json: bool, human: str) -> None:
    """``data`` as indented JSON with ``--json`` (values JSON cannot hold as their ``str``), else ``human``."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str) if as_json else human)
