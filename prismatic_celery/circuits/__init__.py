"""Shared circuit breakers: pybreaker semantics, one atomic Redis script per decision.

See :mod:`.registry` for the staleness bound and :mod:`.storage` for the Redis keys.
"""

from __future__ import annotations

from .breaker import Allowance, CircuitOpenError, Guard, SharedBreaker
from .config import DEFAULT_EXCLUDE, CircuitSpec, parse_circuit, parse_circuits
from .registry import Circuits, UnknownCircuitError
from .storage import CLOSED, HALF_OPEN, OPEN, CircuitRecord, CircuitStorage

__all__ = [
    "CLOSED",
    "DEFAULT_EXCLUDE",
    "HALF_OPEN",
    "OPEN",
    "Allowance",
    "CircuitOpenError",
    "CircuitRecord",
    "CircuitSpec",
    "CircuitStorage",
    "Circuits",
    "Guard",
    "SharedBreaker",
    "UnknownCircuitError",
    "parse_circuit",
    "parse_circuits",
]
