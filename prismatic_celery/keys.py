"""The one namespacing helper: every Redis key is ``prismatic:<app>:<kind>:<name>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KEY_PREFIX", "Keys"]

KEY_PREFIX = "prismatic"
_KIND = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Keys:
    """Builds every key the plugin reads or writes for one Celery app.

    ``namespace`` is the ``<app>`` part (setting ``prismatic_namespace``).
    """

    namespace: str

    def __post_init__(self) -> None:
        if not self.namespace or any(c in self.namespace for c in ": \t\r\n*?[]"):
            raise ValueError(
                f"namespace {self.namespace!r} must be non-empty and contain no ':', "
                "whitespace or glob characters"
            )

    def key(self, kind: str, *name: str) -> str:
        """Return ``prismatic:<namespace>:<kind>:<name>`` (name parts joined by ':')."""
        if not _KIND.match(kind):
            raise ValueError(f"key kind {kind!r} must match {_KIND.pattern}")
        if not name:
            return f"{KEY_PREFIX}:{self.namespace}:{kind}"
        return f"{KEY_PREFIX}:{self.namespace}:{kind}:{':'.join(name)}"

    def pattern(self, kind: str = "*") -> str:
        """A SCAN pattern matching every key of ``kind`` (default: all kinds)."""
        return f"{KEY_PREFIX}:{self.namespace}:{kind}*"

    def parse(self, key: str) -> tuple[str, str] | None:
        """Split a key of this namespace into ``(kind, name)``; None for a foreign key."""
        head = f"{KEY_PREFIX}:{self.namespace}:"
        if not key.startswith(head):
            return None
        kind, _, name = key[len(head):].partition(":")
        if not _KIND.match(kind):
            return None
        return kind, name
