"""``scripts/circuit.lua`` and its Python twin: every decision on one breaker's record, atomically.

The Lua runs on Redis (timed by its ``TIME``); :func:`transition` is the same decision, line for line, on
a :class:`~prismatic_celery.store.MemoryStore` (under its lock). Both answer the reply
:func:`~prismatic_celery.circuits.record.parse_reply` reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..store import MemoryStore, Script
from ..store.base import Scalar
from .record import CLOSED, HALF_OPEN, OPEN, STATES, to_int

__all__ = ["PERMIT", "SCRIPT", "Reply", "ran_on_twin", "transition"]

T = TypeVar("T")
PERMIT = "permit:"

#: verdict, old_state, state, fail_counter, success_counter, opened_at_ms, open_until_ms, permits,
#: permit_until_ms, seq, now_ms, changed (0/1), reason, corrupt (0/1).
Reply = list[str | int]


def transition(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Reply:
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
        value, bad = to_int(h.get(field))
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
            deadline, _ = to_int(value)
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


def _twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Reply:
    """:func:`transition`, noting which in-memory store ran it (see :meth:`CircuitStorage.apply`)."""
    _twin_runs.store = store
    return transition(store, keys, args)


SCRIPT = Script.from_file(Path(__file__).with_name("scripts") / "circuit.lua", _twin)


def ran_on_twin(run: Callable[[], T]) -> tuple[T, MemoryStore | None]:
    """``run()``'s result, and which in-memory store ran the twin meanwhile in this thread (None: Redis did)."""
    _twin_runs.store = None
    try:
        return run(), _twin_runs.store
    finally:
        _twin_runs.store = None
