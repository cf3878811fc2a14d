"""The supervision engine: restarts, strategies, budgets, pauses, hotspots and recycling."""

from __future__ import annotations

from .engine import Engine
from .hotspots import Hotspot, hotspots
from .pauses import Pause, clear_pauses, read_pauses, set_pause
from .reconcile import Reconciler
from .restarts import RestartOutcome, record_restart

__all__ = [
    "Engine",
    "Hotspot",
    "Pause",
    "Reconciler",
    "RestartOutcome",
    "clear_pauses",
    "hotspots",
    "read_pauses",
    "record_restart",
    "set_pause",
]
