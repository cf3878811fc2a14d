"""Every error the plugin raises derives from :class:`PrismaticError`."""

from __future__ import annotations

__all__ = ["ConfigurationError", "PrismaticError", "StoreError"]


class PrismaticError(Exception):
    """Base class of every error raised by prismatic-celery."""


class ConfigurationError(PrismaticError, ValueError):
    """A setting is invalid; the message names the setting and what is allowed.

    Raised at start-up (``install``, worker boot, ``celery supervision check``),
    never while a task runs.
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class StoreError(PrismaticError):
    """The supervision store refused an operation for a reason other than an outage.

    Outages (any ``redis.RedisError``, or ``RedisClusterException``) never raise: the store degrades to its
    in-process twin and logs a warning instead.
    """
