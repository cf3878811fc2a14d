"""The callables the composition root (``runtime.py``) hands to components instead of itself."""

from __future__ import annotations

from typing import Protocol

__all__ = ["BroadcastReconcile", "Emit", "PendingSuccesses"]


class Emit(Protocol):
    """Send a supervision event to every listener (a true ``recorded`` field: already in the store's event
    stream)."""

    def __call__(self, type_: str, /, **fields: object) -> None: ...


class BroadcastReconcile(Protocol):
    """Tell every worker to re-read the pause records now (and stop consuming ``pause``)."""

    def __call__(self, *, pause: list[str]) -> None: ...


class PendingSuccesses(Protocol):
    """Take this process's successes of a child's queue not yet flushed to its execution window."""

    def __call__(self, queue: str, /) -> int: ...
