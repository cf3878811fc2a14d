"""A daemon thread calling a function periodically: what each background service runs its work in."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..log import get_logger, log_event

__all__ = ["Ticker"]

logger = get_logger("worker")


class Ticker:
    """A daemon thread calling ``tick`` every ``interval_s`` (or as soon as ``wake`` is set) until stopped.

    ``tick`` may return a shorter wait (seconds) before its next call.
    """

    def __init__(
        self, name: str, interval_s: float, tick: Callable[[], float | None], *, wake: threading.Event | None = None
    ) -> None:
        self.interval_s = interval_s
        self.tick = tick
        self.wake = wake or threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start ticking (first tick at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current tick."""
        self._stop.set()
        self.wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.interval_s
            try:
                sooner = self.tick()
                if sooner is not None:
                    wait = max(0.01, min(wait, sooner))
            except Exception as exc:  # a failing tick is logged; the next one runs anyway
                log_event(logging.ERROR, "tick-failed", logger, thread=self._thread.name, error=repr(exc)[:300])
            self.wake.wait(wait)
            self.wake.clear()
