"""A pybreaker storage on our :class:`~prismatic_celery.store.Store`, shared by every process.

One hash per breaker, ``prismatic:{<ns>}:circuit:<name>`` (``redis-cli HGETALL`` reads it):
``state``, ``fail_counter``, ``success_counter``, ``opened_at_ms``, ``open_until_ms``, ``seq``,
``changed_at_ms``, ``reason`` and one ``permit:<token>`` field per permit in flight (the
half-open trial), valued at its lease deadline in ms. Every operation is one atomic script
(``scripts/circuit.lua`` on Redis, :func:`transition` in memory) timed by the store's clock
(Redis ``TIME``), so no read-modify-write spans two round trips and no host's clock matters.
Each change of the record is published, in the same script, as JSON on the channel
``prismatic:{<ns>}:circuit-events`` (``redis-cli SUBSCRIBE`` shows them).

Unlike pybreaker's ``CircuitRedisStorage``: the threshold check happens in the same script as
the increment, keys are namespaced per app and breaker, there is no per-process lock to
rely on, and at most one trial permit exists cluster-wide.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pybreaker

from ..log import RateLimitedWarning
from ..store import MemoryStore, Script, Store
from ..store.base import Scalar
from ..store.keys import Keys
from .config import CircuitSpec

__all__ = [
    "CLOSED", "HALF_OPEN", "OPEN", "SCRIPT", "STATES", "CircuitRecord", "CircuitStorage", "Outcome", "parse_message",
    "parse_reply", "transition",
]

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
STATES = (CLOSED, OPEN, HALF_OPEN)
PERMIT = "permit:"


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

    def describe(self) -> dict[str, Any]:
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


# the Python twin of scripts/circuit.lua -------------------------------------------------------
def _int(value: Any) -> tuple[int, bool]:
    if value is None:
        return 0, False
    try:
        return int(float(value)), False
    except (TypeError, ValueError):
        return 0, True


def transition(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[Any]:
    """The in-memory twin of ``circuit.lua``, line for line (runs under the store's lock)."""
    key = keys[0]
    op, _channel, _name, token = (str(a) for a in args[:4])
    fail_max, reset_ms, lease_ms, success_threshold = (int(a) for a in args[4:8])
    strict, amount_ms, target = str(args[8]) == "1", int(args[9]), str(args[10])
    forced = (str(args[11]) if len(args) > 11 else "") or "forced"
    now = int(store.time() * 1000)

    h = store.raw(key)
    if not isinstance(h, dict):
        h = {}
    corrupt = False

    def num(field: str) -> int:
        nonlocal corrupt
        value, bad = _int(h.get(field))
        corrupt = corrupt or bad
        return value

    state = str(h.get("state", CLOSED))
    if state not in STATES:
        corrupt, state = True, CLOSED
    old_state = state
    fail, success = num("fail_counter"), num("success_counter")
    opened_at, open_until, seq = num("opened_at_ms"), num("open_until_ms"), num("seq")
    reason = str(h.get("reason", ""))

    permits: dict[str, int] = {}
    dropped: list[str] = []
    granted: str | None = None
    for field, value in h.items():
        if field.startswith(PERMIT):
            deadline, _ = _int(value)
            if deadline <= now:
                dropped.append(field)
            else:
                permits[field[len(PERMIT):]] = deadline
    held = token != "" and token in permits
    changed = False

    def drop_permit(tok: str) -> None:
        if tok in permits:
            del permits[tok]
            dropped.append(PERMIT + tok)

    def drop_all() -> None:
        dropped.extend(PERMIT + tok for tok in permits)
        permits.clear()

    def grant() -> None:
        nonlocal granted
        permits[token] = now + lease_ms
        granted = token

    def trip(why: str, until_ms: int) -> None:
        nonlocal state, reason, opened_at, open_until, success, changed
        state, reason, opened_at, open_until, success = OPEN, why, now, until_ms, 0
        drop_all()
        changed = True

    def half_open(why: str) -> None:
        nonlocal state, reason, success, changed
        state, reason, success = HALF_OPEN, why, 0
        drop_all()
        changed = True

    def close(why: str) -> None:
        nonlocal state, reason, fail, success, changed
        state, reason, fail, success = CLOSED, why, 0, 0
        drop_all()
        changed = True

    verdict = "ok"
    if op == "read":
        pass
    elif op == "acquire":
        if state == OPEN and now >= open_until:
            half_open("reset-timeout")
        if state == OPEN:
            verdict = "rejected"
        elif state == HALF_OPEN:
            if not permits:
                grant()
                verdict = "trial"
            else:
                verdict = "rejected"
        elif strict:
            if fail + len(permits) < fail_max:
                grant()
                verdict = "permit"
            else:
                verdict = "rejected"
        else:
            verdict = "allowed"
    elif op == "success":
        drop_permit(token)
        verdict = "ignored"
        if state == HALF_OPEN and held:
            success += 1
            changed, verdict = True, "counted"
            if success >= success_threshold:
                close("trial-succeeded")
                verdict = "closed"
        elif state == CLOSED and fail > 0:
            fail = 0
            changed, verdict = True, "reset"
    elif op == "failure":
        drop_permit(token)
        verdict = "ignored"
        if state == CLOSED:
            fail += 1
            changed, verdict = True, "counted"
            if fail >= fail_max:
                trip("failures", now + reset_ms)
                verdict = "opened"
        elif state == HALF_OPEN and held:
            fail += 1  # the failed trial is counted, as pybreaker counts it
            trip("trial-failed", now + reset_ms)
            verdict = "opened"
    elif op == "release":
        drop_permit(token)
    elif op == "force":
        if target == OPEN:
            until_ms = now + amount_ms
            if state == OPEN and open_until > until_ms:
                until_ms = open_until
            trip(forced, until_ms)
        elif target == HALF_OPEN:
            half_open(forced)
        else:
            close(forced)
    elif op == "incr_fail":
        fail, changed = fail + 1, True
    elif op == "reset_fail":
        fail, changed = 0, True
    elif op == "incr_success":
        success, changed = success + 1, True
    elif op == "reset_success":
        success, changed = 0, True
    elif op == "stamp":
        opened_at, open_until, changed = amount_ms, amount_ms + reset_ms, True
    else:
        raise ValueError(f"unknown circuit op {op!r}")

    if dropped or granted is not None or changed:
        stored = store.raw(key)
        if not isinstance(stored, dict):
            stored = {}
            store.set_raw(key, stored)
        for field in dropped:
            stored.pop(field, None)
        if granted is not None:
            stored[PERMIT + granted] = str(now + lease_ms)
        if changed:
            seq = seq + 1 if seq + 1 > now else now
            stored.update({
                "state": state, "fail_counter": str(fail), "success_counter": str(success),
                "opened_at_ms": str(opened_at), "open_until_ms": str(open_until), "seq": str(seq), "reason": reason,
            })
            if state != old_state:
                stored["changed_at_ms"] = str(now)
    permit_until = min(permits.values(), default=0)
    return [verdict, old_state, state, fail, success, opened_at, open_until, len(permits), permit_until, seq, now,
            1 if changed else 0, reason, 1 if corrupt else 0]


_twin_runs = threading.local()


def _twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[Any]:
    """:func:`transition`, noting which in-memory store ran it (see :meth:`CircuitStorage.apply`)."""
    _twin_runs.store = store
    return transition(store, keys, args)


SCRIPT = Script.from_file(Path(__file__).with_name("scripts") / "circuit.lua", _twin)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_reply(name: str, reply: Any) -> Outcome:
    """Turn a script reply (Redis or twin) into an :class:`Outcome`."""
    if not isinstance(reply, (list, tuple)) or len(reply) < 14:
        raise ValueError(f"unexpected circuit script reply {reply!r}")
    verdict, old_state, state = _text(reply[0]), _text(reply[1]), _text(reply[2])
    numbers = [_int(_text(v))[0] for v in reply[3:12]]
    record = CircuitRecord(
        name=name, state=state, fail_counter=numbers[0], success_counter=numbers[1], opened_at_ms=numbers[2],
        open_until_ms=numbers[3], permits=numbers[4], permit_until_ms=numbers[5], seq=numbers[6],
        now_ms=numbers[7], reason=_text(reply[12]),
    )
    return Outcome(verdict=verdict, old_state=old_state, record=record, changed=bool(numbers[8]),
                   corrupt=_int(_text(reply[13]))[0] == 1)


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


class CircuitStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage for one named breaker, backed by a :class:`Store`.

    The compound operations (:meth:`apply` with ``acquire``, ``success``, ``failure``, ``force``)
    are what :class:`~prismatic_celery.circuits.breaker.SharedBreaker` uses. The classic pybreaker
    accessors below also work (each one atomic), so this storage can be given to a plain
    ``pybreaker.CircuitBreaker``, but only the shared breaker makes "count and trip" and "become
    the trial" single atomic steps.
    """

    def __init__(self, store: Store, keys: Keys, name: str, *, spec: CircuitSpec | None = None,
                 channel: str | None = None) -> None:
        super().__init__("prismatic")
        self.store = store
        self.circuit = name
        self.spec = spec or CircuitSpec()
        self.key = keys.key("circuit", name)
        self.channel = channel or ""
        self._corrupt = RateLimitedWarning()

    def apply(self, op: str, spec: CircuitSpec | None = None, *, token: str = "", amount_ms: int = 0,
              target: str = "", reason: str = "") -> Outcome:
        """Run one atomic operation of ``circuit.lua`` and parse its reply.

        ``Outcome.shared`` is False when the store could not run it (a :class:`RedisStore` whose
        server is unreachable answers from its in-process fallback): the reply then says nothing
        about the shared record.
        """
        s = spec or self.spec
        args = self.arguments(op, s, token=token, amount_ms=amount_ms, target=target, reason=reason)
        _twin_runs.store = None
        reply = self.store.run(SCRIPT, [self.key], args)
        ran_on, _twin_runs.store = _twin_runs.store, None
        outcome = parse_reply(self.circuit, reply)
        if outcome.corrupt:
            self._corrupt.warn("circuit-corrupt-record", key=self.key, action="read as closed, rewritten on change")
        if ran_on is not None and ran_on is not self.store:
            return replace(outcome, shared=False)
        return outcome

    def arguments(self, op: str, spec: CircuitSpec, *, token: str = "", amount_ms: int = 0, target: str = "",
                  reason: str = "") -> list[Scalar]:
        """``ARGV`` of ``circuit.lua`` for one operation."""
        return [
            op, self.channel, self.circuit, token, spec.fail_max, spec.reset_timeout_ms, spec.call_timeout_ms,
            spec.success_threshold, "1" if spec.strict else "0", int(amount_ms), target, reason,
        ]

    def read(self) -> CircuitRecord:
        """The current record (one round trip, no write)."""
        return self.apply("read").record

    # pybreaker's storage interface ---------------------------------------------------------
    @property
    def state(self) -> str:
        return self.read().state

    @state.setter
    def state(self, state: str) -> None:
        self.apply("force", target=state, amount_ms=self.spec.reset_timeout_ms)

    def increment_counter(self) -> None:
        self.apply("incr_fail")

    def reset_counter(self) -> None:
        self.apply("reset_fail")

    def increment_success_counter(self) -> None:
        self.apply("incr_success")

    def reset_success_counter(self) -> None:
        self.apply("reset_success")

    @property
    def counter(self) -> int:
        return self.read().fail_counter

    @property
    def success_counter(self) -> int:
        return self.read().success_counter

    @property
    def opened_at(self) -> datetime | None:
        ms = self.read().opened_at_ms
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self.apply("stamp", amount_ms=int(value.timestamp() * 1000))
