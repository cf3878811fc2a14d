"""The supervision page inside Flower: ``/supervision``, ``/api/supervision`` and metrics on ``/metrics``.

Start Flower with the shipped config::

    celery -A proj flower --conf="$(celery -A proj supervision flowerconfig)" --basic-auth=ops:secret

or, in your own ``flowerconfig.py``, call :func:`install` (a config file is Python
that Flower executes before it builds its web application)::

    from prismatic_celery.observability.flower import install
    install()
    basic_auth = ["ops:secret"]

How Flower is extended (Flower 2.2 has no plug-in hook for pages):

* **Pages.** ``flower.app.Flower.__init__`` takes its routes from the module-level list
  ``flower.urls.handlers`` when the web application is built, which happens after
  ``--conf`` was executed. :func:`install` inserts two routes into that list, in place and
  before Flower's catch-all 404 route: ``/supervision`` (HTML) and ``/api/supervision``
  (JSON). They subclass Flower's own handlers, so Flower's authentication applies unchanged
  (``--basic-auth``, ``--auth`` with OAuth; the API also obeys ``FLOWER_UNAUTHENTICATED_API``
  like Flower's other API routes), and ``--url-prefix`` rewrites them like Flower's routes.
* **Navigation.** Flower builds its application with the module-level ``flower.urls.settings``;
  :func:`install` sets its ``template_loader`` to one that serves Flower's own templates, its
  ``navbar.html`` with a "Supervision" entry after Broker, so every Flower page links to the page.
* **Metrics.** Flower's ``/metrics`` serialises ``prometheus_client``'s process-wide
  registry, which holds only Flower's own metrics; the supervision state lives in Redis.
  :func:`install` registers :class:`~prismatic_celery.observability.prometheus.SupervisionCollector` on
  that registry (:func:`~prismatic_celery.observability.flower.metrics.register`), so every scrape of
  Flower's ``/metrics`` also reads the supervision state from the store.

The Celery app is the one Flower was started with (``celery -A proj flower``): read from
the running ``celery`` command's context, or passed to :func:`install`.
"""

from __future__ import annotations

import logging

from celery import Celery

from ...log import get_logger, log_event

__all__ = ["install", "installed_routes"]

logger = get_logger("flower")

PAGE_PATH = r"/supervision"
API_PATH = r"/api/supervision"


def _flower_routes() -> list[object]:
    try:
        from flower import urls  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the flower extra is missing
        raise ImportError("the Flower page needs Flower: pip install 'prismatic-celery[flower]'") from exc
    routes = urls.handlers
    assert isinstance(routes, list)
    return routes


def _pattern(route: object) -> str:
    """A route's path pattern: a ``URLSpec``'s regex, or the first item of a ``(pattern, handler, ...)`` tuple."""
    regex = getattr(route, "regex", None)
    if regex is not None:
        return str(regex.pattern).rstrip("$")
    return str(route[0]) if isinstance(route, (tuple, list)) else ""


def installed_routes() -> list[str]:
    """The supervision routes currently in Flower's route list."""
    return [p for p in (_pattern(r) for r in _flower_routes()) if p in (PAGE_PATH, API_PATH)]


def _app_from_command() -> Celery | None:
    """The app of the running ``celery -A proj flower`` command, if there is one."""
    import click

    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        app = getattr(ctx.obj, "app", None)
        if isinstance(app, Celery):
            return app
        ctx = ctx.parent
    return None


def _add_navigation() -> None:
    """Flower's pages render its ``navbar.html`` through the application's ``template_loader`` setting when one
    is set: ours serves Flower's templates unchanged but for a "Supervision" entry in the navigation."""
    from flower import urls

    from .handlers import ChainLoader

    settings = urls.settings
    if not isinstance(settings.get("template_loader"), ChainLoader):
        settings["template_loader"] = ChainLoader([str(settings["template_path"])], autoescape="xhtml_escape")


def install(app: Celery | None = None, *, metrics: bool = True) -> None:
    """Mount ``/supervision`` and ``/api/supervision`` in Flower and export the metrics on its ``/metrics``.

    Idempotent. Call it before Flower builds its web application (a ``--conf`` file runs
    early enough). ``app`` defaults to the app of the running ``celery`` command.
    """
    from tornado.web import url

    from .handlers import SupervisionApi, SupervisionPage

    routes = _flower_routes()
    present = installed_routes()
    catch_all = next((i for i, r in enumerate(routes) if _pattern(r) == ".*"), len(routes))
    added: list[object] = []
    if API_PATH not in present:
        added.append((API_PATH, SupervisionApi))
    if PAGE_PATH not in present:
        added.append(url(PAGE_PATH, SupervisionPage, name="supervision"))
    routes[catch_all:catch_all] = added
    _add_navigation()
    if not metrics:
        return
    target = app or _app_from_command()
    if target is None:
        log_event(logging.WARNING, "flower-metrics-skipped", logger,
                  detail="no Celery app: start Flower as `celery -A proj flower` or call install(app)")
        return
    from .metrics import register

    register(target)
