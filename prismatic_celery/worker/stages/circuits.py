"""Circuit breakers: the body runs under every circuit the task declares (``circuits=[...]`` option)."""

from __future__ import annotations

import functools

from ...circuits import Circuits
from ...supervision.locate import AnyTask
from ..pipeline import Call, Stage

__all__ = ["CircuitStage"]


class CircuitStage(Stage):
    """A closed circuit costs no store round trip; an open one raises ``CircuitOpenError`` without running the
    body (the crash stage then defers the message)."""

    def __init__(self, circuits: Circuits) -> None:
        self.circuits = circuits

    def wraps(self, task: AnyTask) -> bool:
        return bool(getattr(task, "circuits", None))

    def wrap(self, task: AnyTask, call: Call) -> Call:
        names = getattr(task, "circuits", None)
        if not names:
            return call
        for name in reversed(tuple(names)):
            call = functools.partial(self.circuits.get(name).call, call)
        return call
