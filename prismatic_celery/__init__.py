"""prismatic-celery: Erlang/OTP-style supervision and self-healing for Celery workers.

Enable it with one call after creating the app::

    app = Celery("proj")
    app.config_from_object("celeryconfig")   # prismatic_* settings live here
    prismatic_celery.install(app)
"""

from __future__ import annotations

from .config import SETTINGS, Settings, load_settings
from .errors import ConfigurationError, PrismaticError, StoreError
from .install import install, supervise_registered_tasks
from .observability.events import SupervisionEvent, SupervisionListener
from .runtime import Runtime, get_runtime
from .store import MemoryStore, RedisStore, Store, open_store
from .store.keys import Keys
from .supervision.crash import reruns
from .supervision.tree import Child, Domain, RestartBudget, RestartType, Strategy, Supervisor
from .worker.task import SupervisedTask

__version__ = "0.1.0"

__all__ = [
    "SETTINGS",
    "Child",
    "ConfigurationError",
    "Domain",
    "Keys",
    "MemoryStore",
    "PrismaticError",
    "RedisStore",
    "RestartBudget",
    "RestartType",
    "Runtime",
    "Settings",
    "Store",
    "StoreError",
    "Strategy",
    "SupervisedTask",
    "SupervisionEvent",
    "SupervisionListener",
    "Supervisor",
    "__version__",
    "get_runtime",
    "install",
    "load_settings",
    "open_store",
    "reruns",
    "supervise_registered_tasks",
]
