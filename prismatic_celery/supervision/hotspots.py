"""Hotspots: children with more than N restarts within a sliding window (default 3 in 5 minutes).

Each child's restarts live in a sorted set ``prismatic:{<ns>}:restarts:<queue>``
scored by the store's clock, trimmed on every write to the window and capped
in size, so memory stays bounded whatever the failure rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store import Store
from ..store.keys import Keys
from .tree import Supervisor

__all__ = ["Hotspot", "hotspots", "is_hotspot"]


@dataclass(frozen=True)
class Hotspot:
    """A child restarting too often."""

    domain: str
    child: str
    restarts: int
    window_s: float


def is_hotspot(restarts_in_window: int, threshold: int) -> bool:
    """A hotspot: more than ``threshold`` restarts in the window."""
    return restarts_in_window > threshold


def hotspots(store: Store, keys: Keys, supervisor: Supervisor, *, threshold: int, window_s: float,
             now: float | None = None) -> list[Hotspot]:
    """Every child over the threshold now (one ZCOUNT per child)."""
    at = store.time() if now is None else now
    found = []
    for domain in supervisor.domain_list:
        for child in domain.child_list:
            count = store.window_count(keys.key("restarts", child.queue), at, window_s)
            if is_hotspot(count, threshold):
                found.append(Hotspot(domain.name, child.queue, count, window_s))
    return found
