"""One breaker's shared record as the store's script answers it, and the messages announcing it.

:class:`CircuitRecord` is the hash ``prismatic:{<ns>}:circuit:<name>`` as read at one instant (field by
field in :mod:`.storage`); :class:`Outcome` is one run of ``scripts/circuit.lua`` (or its Python twin in
:mod:`.script`): what it decided and the record after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypedDict

import pybreaker

__all__ = [
    "CLOSED", "HALF_OPEN", "OPEN", "STATES", "CircuitRecord", "Outcome", "RecordView", "parse_message",
    "parse_reply", "to_int",
]

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
STATES = (CLOSED, OPEN, HALF_OPEN)


class RecordView(TypedDict):
    """:meth:`CircuitRecord.describe`: the record, JSON-ready."""

    state: str
    fail_counter: int
    success_counter: int
    opened_at: float | None
    open_until: float | None
    retry_after_s: float
    trial_in_flight: bool
    permits: int
    reason: str
    seq: int


@dataclass(frozen=True)
class CircuitRecord:
    """One breaker's shared state as read at ``now_ms`` (store clock, ms since the epoch)."""

    name: str
    state: str = CLOSED
    fail_counter: int = 0
    success_counter: int = 0
    opened_at_ms: int = 0
    open_until_ms: int = 0
    permits: int = 0
    permit_until_ms: int = 0
    seq: int = 0
    now_ms: int = 0
    reason: str = ""

    def wait_ms(self, now_ms: int | None = None) -> int:
        """Milliseconds until a call may be tried (0: now): reset timeout or trial lease left."""
        now = self.now_ms if now_ms is None else now_ms
        if self.state == OPEN:
            return max(0, self.open_until_ms - now)
        if self.state == HALF_OPEN and self.permits:
            return max(0, self.permit_until_ms - now)
        return 0

    def describe(self) -> RecordView:
        """JSON-ready view (times in seconds since the epoch, store clock)."""
        return {
            "state": self.state,
            "fail_counter": self.fail_counter,
            "success_counter": self.success_counter,
            "opened_at": self.opened_at_ms / 1000 if self.opened_at_ms else None,
            "open_until": self.open_until_ms / 1000 if self.state == OPEN else None,
            "retry_after_s": self.wait_ms() / 1000,
            "trial_in_flight": self.state == HALF_OPEN and self.permits > 0,
            "permits": self.permits,
            "reason": self.reason,
            "seq": self.seq,
        }


@dataclass(frozen=True)
class Outcome:
    """The reply of one script run: what it decided and the record after it."""

    verdict: str
    old_state: str
    record: CircuitRecord
    changed: bool
    corrupt: bool
    shared: bool = True
    """False when the store was unreachable and the answer came from a process-local stand-in."""

    @property
    def transitioned(self) -> bool:
        """The state itself changed (not only a counter)."""
        return self.changed and self.old_state != self.record.state


def to_int(value: object) -> tuple[int, bool]:
    """``value`` (a hash field or a reply item) as an integer, and whether it was corrupt (then 0)."""
    if value is None:
        return 0, False
    if not isinstance(value, (str, bytes, int, float)):
        return 0, True
    try:
        return int(float(value)), False
    except (TypeError, ValueError):
        return 0, True


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_reply(name: str, reply: object) -> Outcome:
    """Turn a script reply (Redis or twin) into an :class:`Outcome`."""
    if not isinstance(reply, (list, tuple)) or len(reply) < 14:
        raise ValueError(f"unexpected circuit script reply {reply!r}")
    verdict, old_state, state = _text(reply[0]), _text(reply[1]), _text(reply[2])
    numbers = [to_int(_text(v))[0] for v in reply[3:12]]
    record = CircuitRecord(
        name=name, state=state, fail_counter=numbers[0], success_counter=numbers[1], opened_at_ms=numbers[2],
        open_until_ms=numbers[3], permits=numbers[4], permit_until_ms=numbers[5], seq=numbers[6],
        now_ms=numbers[7], reason=_text(reply[12]),
    )
    return Outcome(verdict=verdict, old_state=old_state, record=record, changed=bool(numbers[8]),
                   corrupt=to_int(_text(reply[13]))[0] == 1)


def parse_message(raw: str | bytes) -> CircuitRecord | None:
    """A record published on the events channel; None for anything malformed."""
    try:
        data = json.loads(raw)
        return CircuitRecord(
            name=str(data["name"]), state=str(data["state"]) if data["state"] in STATES else CLOSED,
            fail_counter=int(data["fail_counter"]), success_counter=int(data["success_counter"]),
            opened_at_ms=int(data["opened_at_ms"]), open_until_ms=int(data["open_until_ms"]),
            permits=int(data["permits"]), permit_until_ms=0, seq=int(data["seq"]), now_ms=int(data["now_ms"]),
            reason=str(data.get("reason", "")),
        )
    except (ValueError, TypeError, KeyError):
        return None
