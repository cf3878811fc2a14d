"""Structured log lines: ``event=... key=value`` or JSON (setting ``prismatic_log_json``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

__all__ = ["LOGGER_NAME", "REPEATS", "RateLimitedWarning", "RepeatSummary", "get_logger", "log_event", "set_json"]

LOGGER_NAME = "prismatic_celery"
_json = False


def get_logger(suffix: str = "") -> logging.Logger:
    """The plugin's logger (``prismatic_celery`` or a child of it)."""
    return logging.getLogger(f"{LOGGER_NAME}.{suffix}" if suffix else LOGGER_NAME)


def set_json(enabled: bool) -> None:
    """Switch every structured line to JSON (process-wide)."""
    global _json
    _json = enabled


def _format(event: str, fields: dict[str, object]) -> str:
    if _json:
        return json.dumps({"event": event, **fields}, default=str, sort_keys=True)
    parts = [f"event={event}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\n\t'):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def log_event(level: int, event: str, logger: logging.Logger | None = None, **fields: object) -> None:
    """Log one structured line; the fields are also attached as ``record.supervision``."""
    (logger or get_logger()).log(level, "%s", _format(event, fields), extra={"supervision": {"event": event, **fields}})


class RateLimitedWarning:
    """Logs a warning at most once per ``interval_s`` (for outages that repeat per call)."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")
        self.suppressed = 0

    def warn(self, event: str, **fields: object) -> bool:
        """Log unless one was logged less than ``interval_s`` ago; True when logged."""
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        self._last = now
        log_event(logging.WARNING, event, None, suppressed=self.suppressed, **fields)
        self.suppressed = 0
        return True


@dataclass
class _Seen:
    event: str
    level: int
    logger: logging.Logger | None
    fields: dict[str, object]
    since: float
    repeats: int = 0
    last: dict[str, object] = field(default_factory=dict)


class RepeatSummary:
    """Lines that repeat (a queue paused and resumed again and again, a message deferred every second while its
    queue is paused): the first of a kind in a period is logged in full, the repeats are only counted, and one
    ``event=<event>-repeated`` line per period says how many there were (at the next line of that kind, or at
    :meth:`flush`, which the worker calls from its reconcile timer)."""

    def __init__(self, period_s: float = 60.0) -> None:
        self.period_s = period_s
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def log(self, key: str, level: int, event: str, logger: logging.Logger | None = None, **fields: object) -> bool:
        """Log ``event`` unless a line of the same ``key`` was logged within the period; True when logged."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.period_s:
                seen.repeats += 1
                seen.last = fields
                return False
            self._seen[key] = _Seen(event, level, logger, fields, now)
        if seen is not None:
            self._summarise(seen, now)
        log_event(level, event, logger, **fields)
        return True

    def flush(self) -> None:
        """Write the summary of every period that ended with repeats (and forget it)."""
        now = time.monotonic()
        with self._lock:
            ended = [(k, s) for k, s in self._seen.items() if now - s.since >= self.period_s]
            for key, _ in ended:
                del self._seen[key]
        for _, seen in ended:
            self._summarise(seen, now)

    @staticmethod
    def _summarise(seen: _Seen, now: float) -> None:
        if seen.repeats:
            log_event(seen.level, f"{seen.event}-repeated", seen.logger, **seen.last, repeats=seen.repeats,
                      period_s=round(now - seen.since, 1))


#: The process's summary of repeated lines (pauses and resumes of a queue, deferrals): once per minute.
REPEATS = RepeatSummary(60.0)
