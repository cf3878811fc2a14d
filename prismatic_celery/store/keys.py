"""The one namespacing helper: every Redis key is ``prismatic:{<app>}:<kind>:<name>``.

The braces are a Redis Cluster hash tag: every key of one namespace hashes to the same slot, so
every script and every multi-key read of the plugin stays on one node of a cluster (on a single
server or behind Sentinel they are ordinary characters). The price is that one namespace lives on
one shard; spread load over a cluster with several namespaces (``prismatic_namespace``).
"""

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
        if not self.namespace or any(c in self.namespace for c in ": \t\r\n*?[]{}\\"):
            raise ValueError(
                f"namespace {self.namespace!r} must be non-empty and contain no ':', braces, "
                "whitespace, backslash or glob characters"
            )

    @property
    def head(self) -> str:
        """``prismatic:{<namespace>}``: what every key of the namespace starts with (its hash tag inside)."""
        return f"{KEY_PREFIX}:{{{self.namespace}}}"

    def key(self, kind: str, *name: str) -> str:
        """Return ``prismatic:{<namespace>}:<kind>:<name>`` (name parts joined by ':')."""
        if not _KIND.match(kind):
            raise ValueError(f"key kind {kind!r} must match {_KIND.pattern}")
        if not name:
            return f"{self.head}:{kind}"
        return f"{self.head}:{kind}:{':'.join(name)}"

    def pattern(self, kind: str = "*") -> str:
        """A SCAN pattern matching every key of ``kind`` (default: all kinds)."""
        return f"{self.head}:{kind}*"

    def parse(self, key: str) -> tuple[str, str] | None:
        """Split a key of this namespace into ``(kind, name)``; None for a foreign key."""
        head = f"{self.head}:"
        if not key.startswith(head):
            return None
        kind, _, name = key[len(head):].partition(":")
        if not _KIND.match(kind):
            return None
        return kind, name
