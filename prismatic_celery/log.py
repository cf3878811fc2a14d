"""Structured log lines: ``event=... key=value`` or JSON (setting ``prismatic_log_json``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["LOGGER_NAME", "RateLimitedWarning", "get_logger", "log_event", "set_json"]

LOGGER_NAME = "prismatic_celery"
_json = False


def get_logger(suffix: str = "") -> logging.Logger:
    """The plugin's logger (``prismatic_celery`` or a child of it)."""
    return logging.getLogger(f"{LOGGER_NAME}.{suffix}" if suffix else LOGGER_NAME)


def set_json(enabled: bool) -> None:
    """Switch every structured line to JSON (process-wide)."""
    global _json
    _json = enabled


def _format(event: str, fields: dict[str, Any]) -> str:
    if _json:
        return json.dumps({"event": event, **fields}, default=str, sort_keys=True)
    parts = [f"event={event}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\n\t'):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def log_event(level: int, event: str, logger: logging.Logger | None = None, **fields: Any) -> None:
    """Log one structured line; the fields are also attached as ``record.supervision``."""
    (logger or get_logger()).log(level, "%s", _format(event, fields), extra={"supervision": {"event": event, **fields}})


class RateLimitedWarning:
    """Logs a warning at most once per ``interval_s`` (for outages that repeat per call)."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")
        self.suppressed = 0

    def warn(self, event: str, **fields: Any) -> bool:
        """Log unless one was logged less than ``interval_s`` ago; True when logged."""
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        self._last = now
        log_event(logging.WARNING, event, suppressed=self.suppressed, **fields)
        self.suppressed = 0
        return True
