"""Flower handlers: the supervision page (HTML) and its JSON twin, behind Flower's own authentication."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from flower.api import BaseApiHandler  # type: ignore[import-untyped]
from flower.views import BaseHandler  # type: ignore[import-untyped]
from tornado import template, web
from tornado.ioloop import IOLoop

from ...runtime import Runtime, get_runtime
from ..health import get_tree_health

__all__ = ["ChainLoader", "SupervisionApi", "SupervisionPage", "report", "with_supervision_tab"]

TEMPLATES = Path(__file__).with_name("templates")
EVENTS_SHOWN = 30
LESSONS_SHOWN = 20
DEFAULT_REFRESH_S = 10


def report(runtime: Runtime) -> dict[str, object]:
    """What the page and the API show: the cluster-wide health with recent events and lessons."""
    return get_tree_health(runtime, events=EVENTS_SHOWN, lessons=LESSONS_SHOWN)


def _runtime(handler: web.RequestHandler) -> Runtime:
    try:
        runtime = get_runtime(handler.application.capp)  # type: ignore[attr-defined]
    except Exception as exc:  # invalid configuration: say so instead of a stack trace
        raise web.HTTPError(503, f"prismatic-celery configuration is invalid: {exc}") from None
    if runtime is None:
        raise web.HTTPError(503, "prismatic-celery is not installed on this Celery app")
    return runtime


async def _read(runtime: Runtime) -> dict[str, object]:
    """Read off the event loop (Flower's executor): the store may take up to its timeout."""
    return await IOLoop.current().run_in_executor(None, functools.partial(report, runtime))


#: The "Supervision" entry added to Flower's own navigation, after its last primary tab (Broker).
NAV_ITEM = b"""  <li class="nav-item">
          <a class="nav-link{% if active_tab == 'supervision' %} active{% end %}" data-prismatic-nav
            href="{{ reverse_url('supervision') }}"
            {% if active_tab == 'supervision' %}aria-current="page"{% end %}>Supervision</a>
        </li>
      """


def with_supervision_tab(navbar: bytes) -> bytes:
    """Flower's ``navbar.html`` with the Supervision entry closing its primary list (unchanged when the list
    is not found, as in a Flower whose navbar has another shape)."""
    start = navbar.find(b'class="app-nav navbar-nav"')
    end = navbar.find(b"</ul>", start) if start >= 0 else -1
    if end < 0 or b"data-prismatic-nav" in navbar:
        return navbar
    return navbar[:end] + NAV_ITEM + navbar[end:]


class ChainLoader(template.Loader):
    """Templates from ``roots`` in order (ours first, so ours can extend Flower's base.html); Flower's
    ``navbar.html`` gets the Supervision entry (:func:`with_supervision_tab`)."""

    def __init__(self, roots: list[str], **kwargs: object) -> None:
        super().__init__(roots[0], **kwargs)
        self.roots = roots

    def _create_template(self, name: str) -> template.Template:
        for root in self.roots:
            path = os.path.join(root, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    text = f.read()
                if name == "navbar.html":
                    text = with_supervision_tab(text)
                return template.Template(text, name=name, loader=self)
        raise FileNotFoundError(f"template {name!r} not found in {self.roots}")


#: Event fields that get a column of their own on the page; the others are listed in the last column.
EVENT_COLUMNS = ("task", "exception", "action", "reason")
_EVENT_SHOWN = frozenset({"id", "type", "time", "domain", "child", *EVENT_COLUMNS})


def _event_details(event: Mapping[str, object]) -> list[tuple[str, object]]:
    """An event's remaining fields, as (name, value) pairs for the page's details column."""
    return [(k, v) for k, v in sorted(event.items()) if k not in _EVENT_SHOWN and v not in ("", None)]


def _mib(value: object) -> str:
    if value is None:
        return "n/a"
    if not isinstance(value, (int, float, str)):
        raise TypeError(f"not a number of bytes: {value!r}")
    return f"{int(value) / 1048576:.1f} MiB"


def _when(value: object) -> str:
    if not isinstance(value, (int, float, str)):
        return ""
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(value)))
    except ValueError:
        return ""


def _na(value: object) -> str:
    return "n/a" if value is None else str(value)


def _child_state(child: Mapping[str, object]) -> str:
    """``unknown`` (store down), ``paused``, ``unserved`` (no live worker consumes it) or ``running``."""
    if child.get("status") == "unknown":
        return "unknown"
    if child.get("paused"):
        return "paused"
    return "running" if child.get("served", True) else "unserved"


def _pct(value: object, ratio: bool = False) -> str:
    if value is None:
        return "n/a"
    if not isinstance(value, (int, float, str)):
        raise TypeError(f"not a number: {value!r}")
    return f"{float(value) * (100 if ratio else 1):.1f}%"


class SupervisionPage(BaseHandler):  # type: ignore[misc]
    """``/supervision``: the tree with strategies and states, hotspots, circuits, pauses, events, lessons."""

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def create_template_loader(self, template_path: str) -> template.BaseLoader:
        flower_templates = self.application.settings.get("template_path")
        roots = [template_path] + ([str(flower_templates)] if flower_templates else [])
        return ChainLoader(roots, autoescape="xhtml_escape")

    @web.authenticated
    async def get(self) -> None:
        runtime = _runtime(self)
        data = await _read(runtime)
        refresh = self.get_argument("refresh", DEFAULT_REFRESH_S, type=int)
        self.render("supervision.html", report=data, refresh_s=max(0, int(refresh or 0)), ps_mib=_mib,
                    ps_when=_when, ps_pct=_pct, ps_na=_na, ps_child_state=_child_state, ps_details=_event_details,
                    ps_event_columns=EVENT_COLUMNS)


class SupervisionApi(BaseApiHandler):  # type: ignore[misc]
    """``/api/supervision``: the same report as JSON."""

    @web.authenticated
    async def get(self) -> None:
        runtime = _runtime(self)
        data = await _read(runtime)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.write(json.dumps(data, sort_keys=True, default=str))
