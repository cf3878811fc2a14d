"""The stages of the per-task pipeline, one concern each, in their order (see :mod:`..pipeline`)."""

from __future__ import annotations

from .bulkhead import BulkheadStage
from .circuits import CircuitStage
from .crash import CrashStage
from .pause import PauseStage

__all__ = ["BulkheadStage", "CircuitStage", "CrashStage", "PauseStage"]
