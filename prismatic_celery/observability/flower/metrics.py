"""The supervision metrics of a Celery app: on Flower's ``/metrics`` and from the standalone exporter.

This binds the collector of :mod:`prismatic_celery.observability.prometheus` to an app's runtime
(the top layer: the collector itself reads only the pieces it is given).

* ``register(app)``: on a registry (default: the process-wide one Flower's ``/metrics`` serialises);
* ``make_server(app)``: ``celery -A proj supervision exporter`` (binds 127.0.0.1 by default).
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from celery import Celery
from prometheus_client import CollectorRegistry
from prometheus_client.registry import REGISTRY

from ...log import get_logger, log_event
from ...runtime import get_runtime
from ..prometheus import SupervisionCollector, exporter_server
from ..sources import HealthSources

__all__ = ["collector_of", "make_server", "register"]

logger = get_logger("prometheus")


def collector_of(app: Celery) -> SupervisionCollector:
    """A collector reading ``app``'s runtime at each scrape (built on first use; absent while disabled)."""
    def resolve() -> HealthSources | None:
        return get_runtime(app)

    return SupervisionCollector(resolve)


_registered: dict[tuple[int, str], SupervisionCollector] = {}
_register_lock = threading.Lock()


def register(app: Celery, registry: CollectorRegistry = REGISTRY) -> SupervisionCollector:
    """Register the collector of ``app`` on ``registry`` (default: the process-wide one); idempotent."""
    try:
        runtime = get_runtime(app)
    except Exception as exc:  # bad settings: the collector reports store_up 0 until they are fixed
        log_event(logging.ERROR, "metrics-configuration-invalid", logger, error=str(exc)[:300])
        runtime = None
    namespace = runtime.keys.namespace if runtime is not None else app.main or "celery"
    with _register_lock:
        key = (id(registry), namespace)
        found = _registered.get(key)
        if found is None:
            found = _registered[key] = collector_of(app)
            registry.register(found)
        return found


def make_server(app: Celery, *, port: int = 9808, address: str = "127.0.0.1") -> WSGIServer:
    """An HTTP server exporting only the supervision metrics of ``app`` (call ``serve_forever``)."""
    return exporter_server(collector_of(app), port=port, address=address)
