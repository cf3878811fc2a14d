"""Lessons in the store: one JSON document per fingerprint, bounded in number, readable with redis-cli.

Keys (all built by :class:`~prismatic_celery.store.keys.Keys`):

* ``prismatic:{<ns>}:lesson:<fingerprint>``: the lesson as JSON (``redis-cli GET``), see :class:`Lesson`;
* ``prismatic:{<ns>}:lessons``: a sorted set of fingerprints scored by ``last_seen``
  (``redis-cli ZREVRANGE prismatic:{<ns>}:lessons 0 -1 WITHSCORES``), used to evict the least
  recently seen lessons beyond ``max_lessons``.

Atomicity: every read-modify-write of a lesson is **one Lua script** (``scripts/lesson.lua``)
run through :meth:`Store.run`, with its Python twin :func:`lesson_script` for the memory store,
so concurrent crashes of the same fingerprint on many workers never lose a count or an outcome.
Eviction is a second script run only when the index is over its bound; it removes a lesson only
if its score is unchanged since the first script saw it (a lesson seen again meanwhile stays).
:meth:`LessonStore.import_` merges with the existing lesson in Python and then writes it with
one script: an import racing a crash of the same fingerprint may lose that one crash (imports
are an operator's action, not a hot path).

Secrets are redacted (:func:`~prismatic_celery.lessons.redact.redact`) and every text is bounded
*before* anything is sent to the store. Corrupt lessons (bad JSON, wrong types, missing fields)
are skipped with a warning and never raise; a new crash replaces a corrupt lesson.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..log import get_logger, log_event
from ..remediation.actions import Action, action_from_json
from ..store import MemoryStore, Script, Store, encode_json
from ..store.base import Scalar, ScriptCall
from ..store.keys import Keys
from ..validate import as_int
from .classify import FAILURE_CLASSES
from .fingerprint import Fingerprint, normalize_message
from .redact import redact, sanitize

__all__ = [
    "FINGERPRINT_PATTERN", "SCRIPT", "Lesson", "LessonStore", "RemediationStats", "best_action", "lesson_script",
    "taught_action",
]

logger = get_logger("lessons")

#: What a fingerprint may look like (safe inside a key: no ':' and no glob characters).
FINGERPRINT_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_MAX_INT = 2**53
_MAX_TIME = 1e15
_LABEL_LIMIT = 200
#: Most (fingerprint, score) pairs one script run proposes for eviction.
_MAX_VICTIMS = 100


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < _MAX_INT:
        raise ValueError(f"{name} out of range: {value!r}")
    return int(value)


def _check_time(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not -_MAX_TIME < value < _MAX_TIME:
        raise ValueError(f"{name} out of range: {value!r}")
    return float(value)


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _check_strings(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class RemediationStats:
    """How one remediation fared on a lesson's crashes, one outcome per attempt.

    ``recovery_ms`` sums the time from each successful attempt's crash to the re-run's success;
    ``last_failed`` is when it last failed (seconds since the epoch, 0 never).
    """

    tried: int = 0
    succeeded: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    recovery_ms: int = 0
    last_failed: float = 0.0

    @property
    def observations(self) -> int:
        """Outcomes recorded (succeeded + failed)."""
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        """Fraction of outcomes that succeeded; None before any outcome."""
        return self.succeeded / self.observations if self.observations else None

    @property
    def mean_recovery_s(self) -> float | None:
        """Mean seconds from a crash to the success of the re-run this remediation gave it; None before one."""
        return self.recovery_ms / self.succeeded / 1000.0 if self.succeeded else None

    @property
    def rank(self) -> tuple[float, float]:
        """Sort key putting the better remediation first: the highest recovery rate, then the fastest recovery."""
        return (-(self.success_rate or 0.0), self.mean_recovery_s or 0.0)

    def qualifies(self, *, min_observations: int, min_success_rate: float, max_consecutive_failures: int) -> bool:
        """At least ``min_observations`` outcomes, a success rate of at least ``min_success_rate`` and fewer than
        ``max_consecutive_failures`` failures in a row."""
        rate = self.success_rate
        return (rate is not None and self.observations >= min_observations and rate >= min_success_rate
                and self.consecutive_failures < max_consecutive_failures)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"consecutive_failures": self.consecutive_failures, "failed": self.failed,
                "last_failed": round(self.last_failed, 3), "recovery_ms": self.recovery_ms,
                "succeeded": self.succeeded, "tried": self.tried}

    @classmethod
    def from_json(cls, data: Any, *, name: str = "stats") -> RemediationStats:
        """Validate and build; ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"{name} must be an object")
        return cls(
            tried=_check_int(f"{name}.tried", data.get("tried")),
            succeeded=_check_int(f"{name}.succeeded", data.get("succeeded")),
            failed=_check_int(f"{name}.failed", data.get("failed")),
            consecutive_failures=_check_int(f"{name}.consecutive_failures", data.get("consecutive_failures", 0)),
            recovery_ms=_check_int(f"{name}.recovery_ms", data.get("recovery_ms", 0)),
            last_failed=_check_time(f"{name}.last_failed", data.get("last_failed", 0)),
        )


@dataclass(frozen=True)
class Lesson:
    """What the cluster learned about one fingerprint.

    ``message`` is the normalized, redacted message; ``root_cause`` names the innermost in-app
    frame (``module:function``), the exception type and the latest redacted message. Times are
    seconds since the epoch (store clock), kept to the millisecond. ``tasks`` and ``domains``
    are bounded sets, most recent last. ``remediations`` holds the outcomes per remediation
    label (:attr:`~prismatic_celery.remediation.actions.Action.label`); ``taught`` is the action
    an operator pinned (its JSON, ``""`` when none). Version 1 documents (without ``taught``,
    ``recovery_ms`` and ``last_failed``) are read with those as empty.
    """

    fingerprint: str
    failure_class: str
    exc_type: str
    message: str
    root_cause: str
    first_seen: float
    last_seen: float
    count: int
    tasks: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    remediations: Mapping[str, RemediationStats] = field(default_factory=dict, hash=False)
    taught: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict, the same document the store holds."""
        return {
            "count": self.count,
            "domains": list(self.domains),
            "exc_type": self.exc_type,
            "failure_class": self.failure_class,
            "fingerprint": self.fingerprint,
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "message": self.message,
            "remediations": {name: stats.to_json() for name, stats in sorted(self.remediations.items())},
            "root_cause": self.root_cause,
            "taught": self.taught,
            "tasks": list(self.tasks),
            "version": 2,
        }

    @classmethod
    def from_json(cls, data: Any) -> Lesson:
        """Validate every field's type; ValueError naming the first bad one. Unknown fields are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a lesson must be an object, got {type(data).__name__}")
        failure_class = _check_str("failure_class", data.get("failure_class"))
        if failure_class not in FAILURE_CLASSES:
            raise ValueError(f"failure_class {failure_class!r} is not one of {', '.join(FAILURE_CLASSES)}")
        remediations = data.get("remediations")
        if not isinstance(remediations, dict):
            raise ValueError("remediations must be an object")
        stats: dict[str, RemediationStats] = {}
        for name, value in remediations.items():
            stats[_check_str("remediation name", name)] = RemediationStats.from_json(value, name=f"remediations.{name}")
        return cls(
            fingerprint=_check_str("fingerprint", data.get("fingerprint")),
            failure_class=failure_class,
            exc_type=_check_str("exc_type", data.get("exc_type")),
            message=_check_str("message", data.get("message")),
            root_cause=_check_str("root_cause", data.get("root_cause")),
            first_seen=_check_time("first_seen", data.get("first_seen")),
            last_seen=_check_time("last_seen", data.get("last_seen")),
            count=_check_int("count", data.get("count")),
            tasks=_check_strings("tasks", data.get("tasks")),
            domains=_check_strings("domains", data.get("domains")),
            remediations=stats,
            taught=_check_str("taught", data.get("taught", "")),
        )


# the Python twin of scripts/lesson.lua ----------------------------------------------------------
def _load(store: MemoryStore, key: str, fp: str) -> tuple[Lesson | None, int]:
    raw = store.raw(key)
    if raw is None:
        return None, 0
    if not isinstance(raw, str):
        return None, 1
    try:
        lesson = Lesson.from_json(json.loads(raw))
    except ValueError:  # json.JSONDecodeError is a ValueError
        return None, 1
    return (lesson, 0) if lesson.fingerprint == fp else (None, 1)


def _add_bounded(items: Sequence[str], item: str, cap: int) -> tuple[str, ...]:
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


def _index_and_victims(store: MemoryStore, reply: list[Any], index_key: str, fp: str, score: float,
                       max_lessons: int) -> list[Any]:
    index = _index(store, index_key)
    index[fp] = score
    reply.append(len(index))
    if len(index) > max_lessons:
        oldest = sorted(index.items(), key=lambda item: (item[1], item[0]))
        for member, member_score in oldest[: min(len(index) - max_lessons, _MAX_VICTIMS)]:
            reply += [member, repr(member_score)]
    return reply


def lesson_script(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> Any:
    """The in-memory twin of ``lesson.lua``, op for op (runs under the store's lock)."""
    op = str(args[0])
    index_key = keys[0]
    if op == "crash":
        key, fp = keys[1], str(args[1])
        when = store.time() if str(args[6]) == "" else float(args[6])
        when = round(when, 3)
        max_items, max_lessons = int(args[9]), int(args[10])
        lesson, corrupt = _load(store, key, fp)
        if lesson is None:
            lesson = Lesson(fp, str(args[2]), "", "", "", when, when, 0)
        lesson = Lesson(
            fingerprint=fp, failure_class=str(args[2]), exc_type=str(args[3]), message=str(args[4]),
            root_cause=str(args[5]), first_seen=min(lesson.first_seen, when), last_seen=max(lesson.last_seen, when),
            count=lesson.count + 1, tasks=_add_bounded(lesson.tasks, str(args[7]), max_items),
            domains=_add_bounded(lesson.domains, str(args[8]), max_items), remediations=lesson.remediations,
            taught=lesson.taught,
        )
        encoded = encode_json(lesson.to_json())
        store.set_raw(key, encoded)
        return _index_and_victims(store, [encoded, corrupt], index_key, fp, lesson.last_seen, max_lessons)
    if op == "outcome":
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
        encoded = encode_json(lesson.to_json())
        store.set_raw(key, encoded)
        return [encoded, corrupt]
    if op == "teach":
        key, fp = keys[1], str(args[1])
        lesson, corrupt = _load(store, key, fp)
        if lesson is None:
            return ["", corrupt]
        data = lesson.to_json()
        data["taught"] = str(args[2])
        encoded = encode_json(Lesson.from_json(data).to_json())
        store.set_raw(key, encoded)
        return [encoded, corrupt]
    if op == "put":
        key, fp = keys[1], str(args[1])
        try:
            lesson = Lesson.from_json(json.loads(str(args[2])))
        except ValueError:
            return ["", 1]
        if lesson.fingerprint != fp:
            return ["", 1]
        encoded = encode_json(lesson.to_json())
        store.set_raw(key, encoded)
        return _index_and_victims(store, [encoded, 0], index_key, fp, round(lesson.last_seen, 3), int(args[3]))
    if op == "evict":
        max_lessons = int(args[1])
        index = _index(store, index_key)
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
    if op == "delete":
        existed = store.delete(keys[1])
        _index(store, index_key).pop(str(args[1]), None)
        return existed
    if op == "list":
        limit = int(args[1])
        ranked = sorted(_index(store, index_key).items(), key=lambda item: (item[1], item[0]), reverse=True)
        return [member for member, _ in (ranked[:limit] if limit > 0 else ranked)]
    if op == "count":
        return len(_index(store, index_key))
    raise ValueError(f"lesson script: unknown op {op!r}")


def _replace_remediations(lesson: Lesson, remediations: Mapping[str, RemediationStats]) -> Lesson:
    data = lesson.to_json()
    data["remediations"] = {name: stats.to_json() for name, stats in remediations.items()}
    return Lesson.from_json(data)


SCRIPT = Script.from_file(Path(__file__).with_name("scripts") / "lesson.lua", lesson_script)


def time_arg(when: float | None) -> str:
    """A script argument: the time to the millisecond, or '' (the store's clock) when absent or not finite."""
    if when is None or isinstance(when, bool) or not math.isfinite(when) or not -_MAX_TIME < when < _MAX_TIME:
        return ""
    return repr(round(float(when), 3))


# the store ----------------------------------------------------------------------------------------
def best_action(
    lesson: Lesson, *, min_observations: int = 3, min_success_rate: float = 0.8, max_consecutive_failures: int = 3,
) -> str | None:
    """The action that has worked for ``lesson``'s crashes, or None.

    An action qualifies with at least ``min_observations`` outcomes, a success rate of at
    least ``min_success_rate`` and fewer than ``max_consecutive_failures`` failures in a row
    (so an action that keeps failing stops being returned even with a good history). Among
    qualifying actions the highest rate wins, then the fastest mean recovery, then the most
    observations, then the name.
    """
    ranked = sorted(
        (*stats.rank, -stats.observations, name)
        for name, stats in lesson.remediations.items()
        if stats.qualifies(min_observations=min_observations, min_success_rate=min_success_rate,
                           max_consecutive_failures=max_consecutive_failures)
    )
    return str(ranked[0][3]) if ranked else None


class LessonStore:
    """Record, read and apply lessons (see the module docstring for keys and atomicity).

    ``max_lessons`` bounds how many lessons are kept (least recently seen evicted first);
    ``message_limit`` bounds each stored message in characters; ``max_items`` bounds the task
    and domain sets of one lesson. Store outages never raise (the store degrades to memory).
    """

    def __init__(
        self, store: Store, keys: Keys, *, max_lessons: int = 1000, message_limit: int = 2000, max_items: int = 20
    ) -> None:
        self.store = store
        self.keys = keys
        self.max_lessons = as_int("max_lessons", max_lessons, minimum=1)
        self.message_limit = as_int("message_limit", message_limit, minimum=64)
        self.max_items = as_int("max_items", max_items, minimum=1)
        self.index_key = keys.key("lessons")

    def key(self, fingerprint: str) -> str:
        """``prismatic:{<ns>}:lesson:<fingerprint>``."""
        return self.keys.key("lesson", fingerprint)

    # recording ------------------------------------------------------------------------------
    def record_crash(
        self,
        fp: Fingerprint | str,
        *,
        task: str,
        domain: str = "",
        failure_class: str,
        exc_type: str,
        message: str | bytes,
        when: float | None = None,
        before: Sequence[ScriptCall] = (),
    ) -> Lesson:
        """Count one crash of ``fp`` atomically and return the lesson as stored.

        ``fp`` is a :class:`Fingerprint` (its normalized message and innermost in-app frame are
        used) or a bare fingerprint string (the message is normalized here). ``message`` is the
        raw exception message: it is redacted and bounded before it is stored. ``when`` (seconds
        since the epoch) defaults to the store's clock, as does a non-finite value. ``before``
        are script calls sent first in the same round trip (the previous attempt's outcome, so
        the lesson returned already holds it). Raises ValueError only for a malformed
        fingerprint or failure class (programming errors); a store outage never raises.
        """
        call = self.crash_call(fp, task=task, domain=domain, failure_class=failure_class, exc_type=exc_type,
                               message=message, when=when)
        replies = self.store.run_many([*before, call])
        reply = replies[-1] if replies else None
        lesson = self._lesson_from_reply(str(call.args[1]), reply, "crash")
        if lesson is None:  # an unreadable reply: answer from what we know, never raise
            args = call.args
            now = self.store.time() if str(args[6]) == "" else float(args[6])
            task_label, domain_label = str(args[7]), str(args[8])
            lesson = Lesson(str(args[1]), failure_class, str(args[3]), str(args[4]), str(args[5]), now, now, 1,
                            (task_label,) if task_label else (), (domain_label,) if domain_label else ())
        self._evict(reply)
        return lesson

    def crash_call(self, fp: Fingerprint | str, *, task: str, domain: str = "", failure_class: str, exc_type: str,
                   message: str | bytes, when: float | None = None) -> ScriptCall:
        """The script call that counts one crash (see :meth:`record_crash`)."""
        fp_hash = fp.hash if isinstance(fp, Fingerprint) else fp
        self._check_fingerprint(fp_hash)
        if failure_class not in FAILURE_CLASSES:
            raise ValueError(f"failure_class {failure_class!r} is not one of {', '.join(FAILURE_CLASSES)}")
        normalized = fp.normalized_message if isinstance(fp, Fingerprint) else normalize_message(message)
        exc_label = sanitize(exc_type, limit=_LABEL_LIMIT)
        root = fp.root_frame if isinstance(fp, Fingerprint) else None
        where = ""
        if root:
            where = f"{sanitize(root[0], limit=_LABEL_LIMIT)}:{sanitize(root[1], limit=_LABEL_LIMIT)} raised "
        root_cause = f"{where}{exc_label}: {redact(message, limit=self.message_limit)}"
        args: list[Scalar] = [
            "crash", fp_hash, failure_class, exc_label, redact(normalized, limit=self.message_limit), root_cause,
            time_arg(when), sanitize(task, limit=_LABEL_LIMIT),
            sanitize(domain, limit=_LABEL_LIMIT), self.max_items, self.max_lessons,
        ]
        return ScriptCall(SCRIPT, [self.index_key, self.key(fp_hash)], args)

    def record_outcome(self, fingerprint: str, action_name: str, succeeded: bool, *,
                       recovery_s: float | None = None, when: float | None = None) -> Lesson | None:
        """Record whether the remediation ``action_name`` (a label), applied to one crash of ``fingerprint``,
        made the re-run succeed; ``recovery_s`` is the time from that crash to the success.

        Returns the updated lesson; None (nothing recorded) when there is no readable lesson.
        """
        call = self.outcome_call(fingerprint, action_name, succeeded, recovery_s=recovery_s, when=when)
        if call is None:
            return None
        return self._lesson_from_reply(fingerprint, self.store.run(call.script, call.keys, call.args), "outcome")

    def outcome_call(self, fingerprint: str, action_name: str, succeeded: bool, *,
                     recovery_s: float | None = None, when: float | None = None) -> ScriptCall | None:
        """The script call of :meth:`record_outcome` (to batch with others); None for a malformed fingerprint."""
        if not self._valid_fingerprint(fingerprint):
            return None
        action = sanitize(action_name, limit=_LABEL_LIMIT)
        if not action:
            raise ValueError("action_name must not be empty")
        recovery = ""
        if succeeded and recovery_s is not None and math.isfinite(recovery_s):
            recovery = str(max(0, min(int(recovery_s * 1000), _MAX_INT - 1)))
        return ScriptCall(SCRIPT, [self.index_key, self.key(fingerprint)],
                          ["outcome", fingerprint, action, "1" if succeeded else "0", recovery, time_arg(when)])

    def teach(self, fingerprint: str, action: Mapping[str, Any] | None) -> Lesson | None:
        """Pin ``action`` (``{"action": name, **params}``, validated by the caller) for this fingerprint, or
        forget what was taught (None). Returns the lesson; None when there is no readable lesson."""
        if not self._valid_fingerprint(fingerprint):
            return None
        taught = encode_json(dict(action)) if action is not None else ""
        reply = self.store.run(SCRIPT, [self.index_key, self.key(fingerprint)], ["teach", fingerprint, taught])
        return self._lesson_from_reply(fingerprint, reply, "teach")

    # reading --------------------------------------------------------------------------------
    def get(self, fingerprint: str) -> Lesson | None:
        """The lesson, or None when absent or corrupt (corrupt: a warning is logged)."""
        if not self._valid_fingerprint(fingerprint):
            return None
        key = self.key(fingerprint)
        data = self.store.get_json(key)  # bad JSON: the store warns and answers None
        if data is None:
            return None
        return self._parse(fingerprint, data, key)

    def best_remediation(
        self,
        fingerprint: str,
        *,
        min_observations: int = 3,
        min_success_rate: float = 0.8,
        max_consecutive_failures: int = 3,
    ) -> str | None:
        """The action that has worked for this fingerprint, or None (see :func:`best_action`)."""
        lesson = self.get(fingerprint)
        if lesson is None:
            return None
        return best_action(lesson, min_observations=min_observations, min_success_rate=min_success_rate,
                           max_consecutive_failures=max_consecutive_failures)

    def all(self, limit: int | None = 100) -> list[Lesson]:
        """Lessons, most recently seen first (``limit`` None or 0: every lesson)."""
        fingerprints = self.store.run(SCRIPT, [self.index_key], ["list", limit or 0])
        if not isinstance(fingerprints, list):
            return []
        lessons = [self.get(str(fp)) for fp in fingerprints]
        return [lesson for lesson in lessons if lesson is not None]

    def count(self) -> int:
        """How many lessons the index holds (ZCARD)."""
        value = self.store.run(SCRIPT, [self.index_key], ["count"])
        return int(value) if isinstance(value, int) else 0

    # carrying knowledge ---------------------------------------------------------------------
    def export(self) -> list[dict[str, Any]]:
        """Every lesson as a JSON-ready dict (the input of :meth:`import_`)."""
        return [lesson.to_json() for lesson in self.all(limit=None)]

    def import_(self, lessons: Iterable[Any]) -> int:
        """Merge exported lessons into this store; returns how many were imported.

        Entries are validated (bad ones are skipped with a warning) and their texts redacted and
        bounded again. An existing lesson is merged: counts and outcomes added, first/last seen
        widened, task and domain sets united, texts taken from the more recently seen side.
        """
        imported = 0
        for position, entry in enumerate(lessons):
            try:
                lesson = self._clean(Lesson.from_json(entry))
                self._check_fingerprint(lesson.fingerprint)
            except ValueError as exc:
                log_event(logging.WARNING, "lesson-import-skipped", logger, position=position, error=str(exc)[:200])
                continue
            existing = self.get(lesson.fingerprint)
            merged = _merge(existing, lesson, self.max_items) if existing else lesson
            reply = self.store.run(
                SCRIPT, [self.index_key, self.key(lesson.fingerprint)],
                ["put", lesson.fingerprint, encode_json(merged.to_json()), self.max_lessons],
            )
            if self._lesson_from_reply(lesson.fingerprint, reply, "import") is not None:
                imported += 1
            self._evict(reply)
        return imported

    def delete(self, fingerprint: str) -> bool:
        """Forget a lesson; True when it existed."""
        if not self._valid_fingerprint(fingerprint):
            return False
        existed = self.store.run(SCRIPT, [self.index_key, self.key(fingerprint)], ["delete", fingerprint])
        return bool(existed)

    # helpers --------------------------------------------------------------------------------
    @staticmethod
    def _valid_fingerprint(fingerprint: Any) -> bool:
        return isinstance(fingerprint, str) and FINGERPRINT_PATTERN.match(fingerprint) is not None

    def _check_fingerprint(self, fingerprint: Any) -> None:
        if not self._valid_fingerprint(fingerprint):
            raise ValueError(f"fingerprint {fingerprint!r} must match {FINGERPRINT_PATTERN.pattern}")

    def _parse(self, fingerprint: str, data: Any, key: str) -> Lesson | None:
        try:
            lesson = Lesson.from_json(data)
            if lesson.fingerprint != fingerprint:
                raise ValueError(f"fingerprint field {lesson.fingerprint!r} does not match the key")
        except ValueError as exc:
            log_event(logging.WARNING, "lesson-corrupt", logger, key=key, error=str(exc)[:200], action="skipped")
            return None
        return lesson

    def _lesson_from_reply(self, fingerprint: str, reply: Any, op: str) -> Lesson | None:
        key = self.key(fingerprint)
        if not isinstance(reply, list) or len(reply) < 2:
            log_event(logging.WARNING, "lesson-unexpected-reply", logger, key=key, op=op, reply=repr(reply)[:200])
            return None
        if reply[1] == 1:
            action = "replaced" if op == "crash" else "skipped"
            log_event(logging.WARNING, "lesson-corrupt", logger, key=key, op=op, action=action)
        if not reply[0]:
            return None
        try:
            data = json.loads(reply[0])
        except ValueError:
            log_event(logging.WARNING, "lesson-unexpected-reply", logger, key=key, op=op, reply=repr(reply)[:200])
            return None
        return self._parse(fingerprint, data, key)

    def _evict(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 5:
            return
        victims = [str(item) for item in reply[3:]]
        fingerprints = victims[0::2]
        keys = [self.index_key, *(self.key(fp) for fp in fingerprints)]
        removed = self.store.run(SCRIPT, keys, ["evict", self.max_lessons, *victims])
        if removed:
            log_event(logging.INFO, "lessons-evicted", logger, count=len(removed), max_lessons=self.max_lessons)

    def _clean(self, lesson: Lesson) -> Lesson:
        """An imported lesson with its texts redacted and bounded like recorded ones."""
        data = lesson.to_json()
        data["message"] = redact(lesson.message, limit=self.message_limit)
        data["root_cause"] = redact(lesson.root_cause, limit=self.message_limit + 2 * _LABEL_LIMIT + 16)
        data["exc_type"] = sanitize(lesson.exc_type, limit=_LABEL_LIMIT)
        data["tasks"] = [sanitize(t, limit=_LABEL_LIMIT) for t in lesson.tasks[-self.max_items:]]
        data["domains"] = [sanitize(d, limit=_LABEL_LIMIT) for d in lesson.domains[-self.max_items:]]
        data["remediations"] = {
            sanitize(name, limit=_LABEL_LIMIT): stats.to_json() for name, stats in lesson.remediations.items() if name
        }
        data["taught"] = taught_json(lesson.taught)
        return Lesson.from_json(data)


def taught_action(taught: str) -> Action | None:
    """The action a lesson's ``taught`` field pins: a registered action with validated parameters, else None."""
    return action_from_json(taught) if taught else None


def taught_json(taught: str) -> str:
    """``taught`` re-encoded from its validated action, or ``""`` when it names no valid action."""
    action = taught_action(taught)
    return encode_json(action.to_json()) if action is not None else ""


def _merge(existing: Lesson, incoming: Lesson, max_items: int) -> Lesson:
    newer = incoming if incoming.last_seen > existing.last_seen else existing
    remediations = dict(existing.remediations)
    for name, stats in incoming.remediations.items():
        old = remediations.get(name, RemediationStats())
        remediations[name] = RemediationStats(
            tried=old.tried + stats.tried, succeeded=old.succeeded + stats.succeeded, failed=old.failed + stats.failed,
            consecutive_failures=max(old.consecutive_failures, stats.consecutive_failures),
            recovery_ms=old.recovery_ms + stats.recovery_ms, last_failed=max(old.last_failed, stats.last_failed),
        )
    tasks: tuple[str, ...] = existing.tasks
    for task in incoming.tasks:
        tasks = _add_bounded(tasks, task, max_items)
    domains: tuple[str, ...] = existing.domains
    for domain in incoming.domains:
        domains = _add_bounded(domains, domain, max_items)
    return Lesson(
        fingerprint=existing.fingerprint, failure_class=newer.failure_class, exc_type=newer.exc_type,
        message=newer.message, root_cause=newer.root_cause, first_seen=min(existing.first_seen, incoming.first_seen),
        last_seen=max(existing.last_seen, incoming.last_seen), count=existing.count + incoming.count,
        tasks=tasks, domains=domains, remediations=remediations, taught=newer.taught or existing.taught,
    )
