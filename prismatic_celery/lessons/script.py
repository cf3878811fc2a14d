"""The lesson script: every read-modify-write of a lesson, atomic (``lessons/scripts/lesson.lua``).

:data:`SCRIPT` runs the Lua source on Redis and :func:`lesson_script`, its Python twin op for op,
on the memory store (under the store's lock). Ops: ``crash`` (count one crash), ``outcome`` (one
remediation's outcome), ``teach`` (pin an action), ``put`` (write an imported lesson), ``evict``,
``delete``, ``list`` and ``count``. ``crash`` and ``put`` reply ``[json, corrupt, index size,
victim, score, ...]``: the least recently seen lessons beyond ``max_lessons``, which the store
evicts with a second run (``evict``) only if their score is unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..store import MemoryStore, Script, encode_json
from ..store.base import Scalar
from .records import MAX_TIME, Lesson, RemediationStats

__all__ = ["SCRIPT", "add_bounded", "lesson_script", "load_json", "time_arg"]

#: Most (fingerprint, score) pairs one script run proposes for eviction.
_MAX_VICTIMS = 100

#: A script reply: JSON text, flags, counts and fingerprints.
Reply = list[str | int | float]


def load_json(store: MemoryStore, key: str) -> tuple[object, int]:
    """A twin's read of a JSON document: ``(value, 0)``; ``(None, 0)`` when absent; ``(None, 1)`` when corrupt
    (not text, not JSON, or JSON ``null``: the scripts only ever write objects)."""
    raw = store.raw(key)
    if raw is None:
        return None, 0
    if not isinstance(raw, str):
        return None, 1
    try:
        value = json.loads(raw)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None, 1
    return (value, 0) if value is not None else (None, 1)


def _load(store: MemoryStore, key: str, fp: str) -> tuple[Lesson | None, int]:
    data, corrupt = load_json(store, key)
    if data is None:
        return None, corrupt
    try:
        lesson = Lesson.from_json(data)
    except ValueError:
        return None, 1
    return (lesson, 0) if lesson.fingerprint == fp else (None, 1)


def add_bounded(items: Sequence[str], item: str, cap: int) -> tuple[str, ...]:
    """``items`` with ``item`` moved (or added) last, the oldest dropped beyond ``cap``; ``""`` adds nothing."""
    if not item:
        return tuple(items)
    out = [v for v in items if v != item]
    out.append(item)
    return tuple(out[-cap:]) if cap > 0 else ()


def _index(store: MemoryStore, key: str) -> dict[str, float]:
    value = store.raw(key)
    if not isinstance(value, dict):
        value = {}
        store.set_raw(key, value)
    return value


def _index_and_victims(store: MemoryStore, reply: Reply, index_key: str, fp: str, score: float,
                       max_lessons: int) -> Reply:
    index = _index(store, index_key)
    index[fp] = score
    reply.append(len(index))
    if len(index) > max_lessons:
        oldest = sorted(index.items(), key=lambda item: (item[1], item[0]))
        for member, member_score in oldest[: min(len(index) - max_lessons, _MAX_VICTIMS)]:
            reply += [member, repr(member_score)]
    return reply


def _write(store: MemoryStore, key: str, lesson: Lesson) -> str:
    encoded = encode_json(lesson.to_json())
    store.set_raw(key, encoded)
    return encoded


def _crash(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Reply:
    key, fp = keys[1], str(args[1])
    when = round(store.time() if str(args[6]) == "" else float(args[6]), 3)
    max_items, max_lessons = int(args[9]), int(args[10])
    lesson, corrupt = _load(store, key, fp)
    if lesson is None:
        lesson = Lesson(fp, str(args[2]), "", "", "", when, when, 0)
    lesson = Lesson(
        fingerprint=fp, failure_class=str(args[2]), exc_type=str(args[3]), message=str(args[4]),
        root_cause=str(args[5]), first_seen=min(lesson.first_seen, when), last_seen=max(lesson.last_seen, when),
        count=lesson.count + 1, tasks=add_bounded(lesson.tasks, str(args[7]), max_items),
        domains=add_bounded(lesson.domains, str(args[8]), max_items), remediations=lesson.remediations,
        taught=lesson.taught,
    )
    encoded = _write(store, key, lesson)
    return _index_and_victims(store, [encoded, corrupt], keys[0], fp, lesson.last_seen, max_lessons)


def _outcome(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Reply:
    key, fp, action, succeeded = keys[1], str(args[1]), str(args[2]), str(args[3]) == "1"
    lesson, corrupt = _load(store, key, fp)
    if lesson is None:
        return ["", corrupt]
    old = lesson.remediations.get(action, RemediationStats())
    recovery = str(args[4]) if len(args) > 4 else ""
    new = RemediationStats(
        tried=old.tried + 1,
        succeeded=old.succeeded + (1 if succeeded else 0),
        failed=old.failed + (0 if succeeded else 1),
        consecutive_failures=0 if succeeded else old.consecutive_failures + 1,
        recovery_ms=old.recovery_ms + (max(0, math.floor(float(recovery))) if succeeded and recovery else 0),
        last_failed=old.last_failed if succeeded else round(
            store.time() if len(args) < 6 or str(args[5]) == "" else float(args[5]), 3),
    )
    lesson = _replace_remediations(lesson, {**lesson.remediations, action: new})
    return [_write(store, key, lesson), corrupt]


def _teach(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Reply:
    key, fp = keys[1], str(args[1])
    lesson, corrupt = _load(store, key, fp)
    if lesson is None:
        return ["", corrupt]
    data = lesson.to_json()
    data["taught"] = str(args[2])
    return [_write(store, key, Lesson.from_json(data)), corrupt]


def _put(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Reply:
    key, fp = keys[1], str(args[1])
    try:
        lesson = Lesson.from_json(json.loads(str(args[2])))
    except ValueError:
        return ["", 1]
    if lesson.fingerprint != fp:
        return ["", 1]
    encoded = _write(store, key, lesson)
    return _index_and_victims(store, [encoded, 0], keys[0], fp, round(lesson.last_seen, 3), int(args[3]))


def _evict(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[str]:
    max_lessons = int(args[1])
    index = _index(store, keys[0])
    removed = []
    for i, key in enumerate(keys[1:]):
        if len(index) <= max_lessons:
            break
        fp, score = str(args[2 + 2 * i]), float(args[3 + 2 * i])
        if fp in index and index[fp] == score:
            del index[fp]
            store.delete(key)
            removed.append(fp)
    return removed


def _delete(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    existed = store.delete(keys[1])
    _index(store, keys[0]).pop(str(args[1]), None)
    return existed


def _list(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[str]:
    limit = int(args[1])
    ranked = sorted(_index(store, keys[0]).items(), key=lambda item: (item[1], item[0]), reverse=True)
    return [member for member, _ in (ranked[:limit] if limit > 0 else ranked)]


def _count(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    return len(_index(store, keys[0]))


_OPS: Mapping[str, Callable[[MemoryStore, Sequence[str], Sequence[Scalar]], object]] = {
    "crash": _crash, "outcome": _outcome, "teach": _teach, "put": _put, "evict": _evict, "delete": _delete,
    "list": _list, "count": _count,
}


def lesson_script(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> object:
    """The in-memory twin of ``lesson.lua``, op for op (runs under the store's lock)."""
    op = _OPS.get(str(args[0]))
    if op is None:
        raise ValueError(f"lesson script: unknown op {str(args[0])!r}")
    return op(store, keys, args)


def _replace_remediations(lesson: Lesson, remediations: Mapping[str, RemediationStats]) -> Lesson:
    data = lesson.to_json()
    data["remediations"] = {name: stats.to_json() for name, stats in remediations.items()}
    return Lesson.from_json(data)


SCRIPT = Script.from_file(Path(__file__).with_name("scripts") / "lesson.lua", lesson_script)


def time_arg(when: float | None) -> str:
    """A script argument: the time to the millisecond, or '' (the store's clock) when absent or not finite."""
    if when is None or isinstance(when, bool) or not math.isfinite(when) or not -MAX_TIME < when < MAX_TIME:
        return ""
    return repr(round(float(when), 3))
