"""pybreaker's listeners of one shared breaker, told one callback at a time per breaker and process.

In pybreaker's order: ``before_call``, then ``failure`` or ``success`` around the ``state_change`` the
outcome caused. ``state_change`` is also told when this process *notices* a change made elsewhere (a
reply or a pub/sub message), as pybreaker's ``state`` getter does.
"""

from __future__ import annotations

import logging
import threading

import pybreaker

from ..log import get_logger, log_event

__all__ = ["Notifier"]

logger = get_logger("circuits")


class Notifier:
    """Calls a hook on every listener of ``breaker``; a broken listener is logged, never raised."""

    def __init__(self, breaker: pybreaker.CircuitBreaker, circuit: str) -> None:
        self.breaker = breaker
        self.circuit = circuit
        self._lock = threading.RLock()

    def after_fork(self) -> None:
        """A forked child starts with a fresh lock (a parent thread may have held it)."""
        self._lock = threading.RLock()

    def tell(self, hook: str, *args: object, **kwargs: object) -> None:
        """Call ``hook`` on every pybreaker listener, one callback at a time per breaker in this process."""
        listeners = self.breaker.listeners
        if not listeners:
            return
        with self._lock:
            for listener in listeners:
                try:
                    getattr(listener, hook)(self.breaker, *args, **kwargs)
                except Exception as exc:  # a broken pybreaker listener must not break the protected call
                    log_event(logging.ERROR, "circuit-listener-failed", logger, name=self.circuit,
                              hook=f"{type(listener).__name__}.{hook}", error=repr(exc)[:300])

    def state_changed(self, old: str, new: str) -> None:
        """``state_change`` with pybreaker's state objects for ``old`` and ``new``."""
        if self.breaker.listeners:
            create = self.breaker._create_new_state
            self.tell("state_change", create(old), create(new))
