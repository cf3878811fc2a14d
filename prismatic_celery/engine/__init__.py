"""The supervision engine: message and child failures, strategies, budgets, pauses, hotspots and recycling."""

from __future__ import annotations

from .engine import Engine
from .hotspots import Hotspot, hotspots
from .pauses import Pause, clear_pauses, read_pauses, set_pause
from .reconcile import Reconciler
from .restarts import ChildPolicy, RestartOutcome, failure_call, record_failure
from .window import ExecutionWindow

__all__ = [
    "ChildPolicy",
    "Engine",
    "ExecutionWindow",
    "Hotspot",
    "Pause",
    "Reconciler",
    "RestartOutcome",
    "clear_pauses",
    "failure_call",
    "hotspots",
    "read_pauses",
    "record_failure",
    "set_pause",
]
