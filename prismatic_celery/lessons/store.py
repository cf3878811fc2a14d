"""Lessons in the store: one JSON document per fingerprint, bounded in number, readable with redis-cli.

Keys (all built by :class:`~prismatic_celery.store.keys.Keys`):

* ``prismatic:{<ns>}:lesson:<fingerprint>``: the lesson as JSON (``redis-cli GET``), see
  :class:`~.records.Lesson` (``lessons/records.py``);
* ``prismatic:{<ns>}:lessons``: a sorted set of fingerprints scored by ``last_seen``
  (``redis-cli ZREVRANGE prismatic:{<ns>}:lessons 0 -1 WITHSCORES``), used to evict the least
  recently seen lessons beyond ``max_lessons``.

Atomicity: every read-modify-write of a lesson is **one Lua script** (``scripts/lesson.lua``)
run through :meth:`Store.run`, with its Python twin :func:`~.script.lesson_script` (``lessons/script.py``)
for the memory store,
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

from ..log import get_logger, log_event
from ..remediation.actions import Action, action_from_json
from ..store import Store, encode_json
from ..store.base import Scalar, ScriptCall
from ..store.keys import Keys
from ..validate import as_int
from .classify import FAILURE_CLASSES
from .fingerprint import Fingerprint
from .normalize import normalize_message
from .records import MAX_INT, Lesson, LessonJSON, RemediationStats
from .redact import redact, sanitize
from .script import SCRIPT, add_bounded, time_arg

__all__ = [
    "FINGERPRINT_PATTERN", "SCRIPT", "Lesson", "LessonStore", "RemediationStats", "best_action", "taught_action",
]

logger = get_logger("lessons")

#: What a fingerprint may look like (safe inside a key: no ':' and no glob characters).
FINGERPRINT_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_LABEL_LIMIT = 200


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
            recovery = str(max(0, min(int(recovery_s * 1000), MAX_INT - 1)))
        return ScriptCall(SCRIPT, [self.index_key, self.key(fingerprint)],
                          ["outcome", fingerprint, action, "1" if succeeded else "0", recovery, time_arg(when)])

    def teach(self, fingerprint: str, action: Mapping[str, object] | None) -> Lesson | None:
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
    def export(self) -> list[LessonJSON]:
        """Every lesson as a JSON-ready dict (the input of :meth:`import_`)."""
        return [lesson.to_json() for lesson in self.all(limit=None)]

    def import_(self, lessons: Iterable[object]) -> int:
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
    def _valid_fingerprint(fingerprint: object) -> bool:
        return isinstance(fingerprint, str) and FINGERPRINT_PATTERN.match(fingerprint) is not None

    def _check_fingerprint(self, fingerprint: object) -> None:
        if not self._valid_fingerprint(fingerprint):
            raise ValueError(f"fingerprint {fingerprint!r} must match {FINGERPRINT_PATTERN.pattern}")

    def _parse(self, fingerprint: str, data: object, key: str) -> Lesson | None:
        try:
            lesson = Lesson.from_json(data)
            if lesson.fingerprint != fingerprint:
                raise ValueError(f"fingerprint field {lesson.fingerprint!r} does not match the key")
        except ValueError as exc:
            log_event(logging.WARNING, "lesson-corrupt", logger, key=key, error=str(exc)[:200], action="skipped")
            return None
        return lesson

    def _lesson_from_reply(self, fingerprint: str, reply: object, op: str) -> Lesson | None:
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

    def _evict(self, reply: object) -> None:
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
        tasks = add_bounded(tasks, task, max_items)
    domains: tuple[str, ...] = existing.domains
    for domain in incoming.domains:
        domains = add_bounded(domains, domain, max_items)
    return Lesson(
        fingerprint=existing.fingerprint, failure_class=newer.failure_class, exc_type=newer.exc_type,
        message=newer.message, root_cause=newer.root_cause, first_seen=min(existing.first_seen, incoming.first_seen),
        last_seen=max(existing.last_seen, incoming.last_seen), count=existing.count + incoming.count,
        tasks=tasks, domains=domains, remediations=remediations, taught=newer.taught or existing.taught,
    )
