"""The package exports what users write, nothing else: internals are imported from their own modules."""

from __future__ import annotations

import prismatic_celery

PUBLIC = {
    # enabling it
    "install", "supervise_registered_tasks", "reruns",
    # the supervision tree
    "Supervisor", "Domain", "Child", "RestartBudget", "Strategy", "RestartType",
    # remediation rules and the actions they name (prismatic_remediation_rules)
    "Rule", "Match", "RetryWithBackoff", "CircuitBreak", "RestartChild", "RecycleProcess", "DeadLetter", "Shed",
    "Escalate",
    # the shared circuit breaker users call around external calls
    "SharedBreaker", "CircuitOpenError",
    # listeners
    "SupervisionListener", "SupervisionEvent",
    # errors
    "ConfigurationError", "PrismaticError", "StoreError",
    "__version__",
}

INTERNAL = ("Runtime", "get_runtime", "Keys", "Store", "MemoryStore", "RedisStore", "open_store", "load_settings",
            "SETTINGS", "Settings", "SupervisedTask")


def test_all_is_exactly_the_public_api() -> None:
    assert set(prismatic_celery.__all__) == PUBLIC
    assert len(prismatic_celery.__all__) == len(PUBLIC)


def test_every_exported_name_resolves_and_no_internal_one_is_exported() -> None:
    for name in prismatic_celery.__all__:
        assert getattr(prismatic_celery, name) is not None, name
    for name in INTERNAL:
        assert name not in prismatic_celery.__all__, name


def test_star_import_gives_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from prismatic_celery import *", namespace)  # the import users may write
    assert set(namespace) - {"__builtins__"} == PUBLIC


def test_the_exports_are_the_defining_modules_objects() -> None:
    """Re-exports, not copies: ``prismatic_celery.Rule`` is ``prismatic_celery.remediation.rules.Rule``..."""
    from prismatic_celery.circuits.breaker import CircuitOpenError, SharedBreaker
    from prismatic_celery.remediation.actions import RetryWithBackoff
    from prismatic_celery.remediation.rules import Rule
    from prismatic_celery.supervision.tree import Supervisor

    assert (prismatic_celery.SharedBreaker, prismatic_celery.CircuitOpenError) == (SharedBreaker, CircuitOpenError)
    assert (prismatic_celery.Rule, prismatic_celery.RetryWithBackoff) == (Rule, RetryWithBackoff)
    assert prismatic_celery.Supervisor is Supervisor
