"""prismatic-celery: Erlang/OTP-style supervision and self-healing for Celery workers.

Enable it with one call after creating the app::

    app = Celery("proj")
    app.config_from_object("celeryconfig")   # prismatic_* settings live here
    prismatic_celery.install(app)
"""

from __future__ import annotations

from .config import SETTINGS, Settings, load_settings
from .engine.crash import reruns
from .errors import ConfigurationError, PrismaticError, StoreError
from .install import install, supervise_registered_tasks
from .keys import Keys
from .listeners import SupervisionEvent, SupervisionListener
from .runtime import Runtime, get_runtime
from .store import MemoryStore, RedisStore, Store, open_store
from .task import SupervisedTask
from .tree import Child, Domain, RestartBudget, RestartType, Strategy, Supervisor

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
