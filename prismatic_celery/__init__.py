"""prismatic-celery: Erlang/OTP-style supervision and self-healing for Celery workers.

Enable it with one call after creating the app::

    app = Celery("proj")
    app.config_from_object("celeryconfig")   # prismatic_* settings live here
    prismatic_celery.install(app)

This package exports what users write: the install calls, the supervision tree, remediation rules and
actions, the shared circuit breaker, supervision listeners and the errors. Everything else is imported
from the module that defines it (e.g. ``prismatic_celery.runtime.get_runtime``).
"""

from __future__ import annotations

from .circuits.breaker import SharedBreaker
from .circuits.calls import CircuitOpenError
from .errors import ConfigurationError, PrismaticError, StoreError
from .install import install, supervise_registered_tasks
from .observability.events import SupervisionEvent, SupervisionListener
from .remediation.actions import (
    CircuitBreak,
    DeadLetter,
    Escalate,
    RecycleProcess,
    RestartChild,
    RetryWithBackoff,
    Shed,
)
from .remediation.rules import Match, Rule
from .supervision.crash import reruns
from .supervision.tree import Child, Domain, RestartBudget, RestartType, Strategy, Supervisor

__version__ = "0.1.0"

__all__ = [
    "Child",
    "CircuitBreak",
    "CircuitOpenError",
    "ConfigurationError",
    "DeadLetter",
    "Domain",
    "Escalate",
    "Match",
    "PrismaticError",
    "RecycleProcess",
    "RestartBudget",
    "RestartChild",
    "RestartType",
    "RetryWithBackoff",
    "Rule",
    "SharedBreaker",
    "Shed",
    "StoreError",
    "Strategy",
    "SupervisionEvent",
    "SupervisionListener",
    "Supervisor",
    "__version__",
    "install",
    "reruns",
    "supervise_registered_tasks",
]
