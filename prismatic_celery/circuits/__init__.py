"""Shared circuit breakers: pybreaker semantics, one atomic Redis script per decision.

See :mod:`.breaker` for the call path, :mod:`.outage` for store outages, :mod:`.hub` for the staleness
bound and :mod:`.storage` for the Redis keys. Outside a worker, build one with pybreaker's arguments plus
the store: ``SharedBreaker(fail_max=5, reset_timeout=30, name="payments", store=url, namespace=ns)``.
"""

from __future__ import annotations

from .breaker import SharedBreaker
from .calls import Allowance, CircuitOpenError, Guard
from .config import DEFAULT_EXCLUDE, CircuitSpec, parse_circuit, parse_circuits
from .record import CLOSED, HALF_OPEN, OPEN, CircuitRecord
from .registry import Circuits, UnknownCircuitError, connect
from .storage import CircuitStorage

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
    "connect",
    "parse_circuit",
    "parse_circuits",
]
