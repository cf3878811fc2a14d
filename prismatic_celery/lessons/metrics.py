"""Knowledge metrics from real outcomes, never estimates.

The engine reports what happened through a :class:`MetricsRecorder`; :meth:`MetricsRecorder.snapshot`
turns the counters into :class:`KnowledgeMetrics`. Keys:

* ``prismatic:{<ns>}:knowledge``: a hash of counters (``redis-cli HGETALL prismatic:{<ns>}:knowledge``):
  ``crashes``, ``known_pattern_crashes``, ``remediations_applied``, ``action:<name>``,
  ``recovered:<name>``, ``auto_remediated``, ``auto_recovery_ms_total``, ``recoveries``,
  ``recovery_ms_total``, ``recovered_crashes``, ``escalations``, ``dead_letters``,
  ``failed_for_good``, ``false_positives``;
* ``prismatic:{<ns>}:recovery:<task_id>``: a small JSON record per task that crashed and has not
  yet succeeded or failed for good (first crash time, crashes, remediations), expiring
  ``recovery_ttl_s`` (one day) after its last update.

Definitions, per attempt (one crash, one remediation, one re-run):

* **known-pattern crash**: a crash whose lesson already held a remediation known to work, one that
  qualified (see :mod:`.ladder`) or one an operator taught (``crash(known=True)``); a crash whose
  fingerprint was merely seen before is a **recurring crash** (``recurring=True``), counted apart;
* **auto-remediated**: a known-pattern crash whose remediation's re-run succeeded (the very next
  execution, not some later one); the percentage is of known-pattern crashes;
* **mean time to recovery**: over auto-remediated crashes, from the crash to the re-run's success;
* **recovery rate of an action**: re-runs it gave that succeeded / times it was applied
  (``recovered:<name>`` / ``action:<name>``);
* **attempts per recovery**: crashes of the messages that eventually succeeded / those messages;
* **task recovery time**: from a message's first crash to its eventual success;
* **escalation rate**: escalations / crashes, where an escalation is a call for a person: a new
  failure pattern the rules escalate (once per pattern) or a domain whose supervisor budget is
  exhausted, never one per message;
* **dead letters**: messages moved to the dead-letter queue (counted apart from escalations);
* **false positive**: a remediation applied to a task that then failed for good; the rate is
  false positives / remediations applied.

A rate whose denominator is zero is None ("nothing observed yet"), not 0.

Each call is one atomic script (``scripts/knowledge.lua``, Python twin :func:`knowledge_script`)
or one HINCRBY, so counters and the per-task record never disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..log import RateLimitedWarning, get_logger
from ..store import MemoryStore, Script, Store
from ..store.base import Scalar, ScriptCall
from ..store.keys import Keys
from ..validate import as_seconds
from .redact import sanitize
from .script import SCRIPT as LESSON_SCRIPT
from .script import load_json, time_arg

__all__ = ["COUNTERS", "SCRIPT", "KnowledgeMetrics", "MetricsRecorder", "knowledge_script"]

logger = get_logger("lessons")

#: The counter fields of ``prismatic:{<ns>}:knowledge`` (besides ``action:<name>`` and ``recovered:<name>``).
COUNTERS = (
    "crashes", "known_pattern_crashes", "recurring_crashes", "remediations_applied", "auto_remediated",
    "auto_recovery_ms_total", "recoveries", "recovery_ms_total", "recovered_crashes", "escalations",
    "dead_letters", "failed_for_good", "false_positives",
)
_RECORD_INTS = ("auto", "crashes", "known", "last_known", "remediations")
#: A message's recovery record (``first_crash`` and the counts of :data:`_RECORD_INTS`), validated.
_Record = dict[str, float]
_ID_LIMIT = 200


# the Python twin of scripts/knowledge.lua -----------------------------------------------------------
def _load(store: MemoryStore, key: str) -> tuple[_Record | None, int]:
    record, corrupt = load_json(store, key)
    if record is None:
        return None, corrupt
    if not isinstance(record, dict):
        return None, 1
    first = record.get("first_crash")
    if isinstance(first, bool) or not isinstance(first, (int, float)) or math.isnan(first):
        return None, 1
    for name in _RECORD_INTS:
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
            return None, 1
    return record, 0


def _save(store: MemoryStore, key: str, record: _Record, ttl_ms: int) -> None:
    data: dict[str, float] = {name: int(record[name]) for name in _RECORD_INTS}
    data["first_crash"] = round(float(record["first_crash"]), 3)
    store.set_raw(key, json.dumps(data, sort_keys=True, separators=(",", ":")), ttl_s=ttl_ms / 1000)


def _now(store: MemoryStore, arg: Scalar) -> float:
    return round(store.time(), 3) if str(arg) == "" else float(arg)


def knowledge_script(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[int]:
    """The in-memory twin of ``knowledge.lua``, op for op (runs under the store's lock)."""
    op = str(args[0])
    counters, record_key = keys[0], keys[1]
    if op == "crash":
        known = str(args[1]) == "1"
        recurring = len(args) > 4 and str(args[4]) == "1"
        store.hincr(counters, {"crashes": 1, **({"known_pattern_crashes": 1} if known else {}),
                               **({"recurring_crashes": 1} if recurring else {})})
        record, corrupt = _load(store, record_key)
        if record is None:
            record = {"auto": 0, "crashes": 0, "first_crash": _now(store, args[2]), "known": 0, "last_known": 0,
                      "remediations": 0}
        record["crashes"] += 1
        record["known"] += 1 if known else 0
        record["last_known"] = 1 if known else 0
        _save(store, record_key, record, int(args[3]))
        return [int(record["crashes"]), corrupt]
    if op == "remediated":
        store.hincr(counters, {"remediations_applied": 1, f"action:{args[1]}": 1})
        record, corrupt = _load(store, record_key)
        if record is None:
            return [0, corrupt]
        record["remediations"] += 1
        auto = 1 if record["last_known"] == 1 else 0
        record["auto"] += auto
        _save(store, record_key, record, int(args[2]))
        return [auto, corrupt]
    if op == "succeeded":
        now = _now(store, args[1])
        applied, was_known, action = (str(args[2]), str(args[3]), str(args[4])) if len(args) > 4 else ("", "0", "")
        if action:
            store.hincr(counters, {f"recovered:{action}": 1})
            if was_known == "1" and applied:
                attempt_ms = max(0, math.floor((now - float(applied)) * 1000 + 0.5))
                store.hincr(counters, {"auto_remediated": 1, "auto_recovery_ms_total": attempt_ms})
        record, corrupt = _load(store, record_key)
        if record is None:
            return [-1, corrupt]
        ms = max(0, math.floor((now - float(record["first_crash"])) * 1000 + 0.5))
        store.hincr(counters, {"recoveries": 1, "recovery_ms_total": ms, "recovered_crashes": int(record["crashes"])})
        store.delete(record_key)
        return [ms, corrupt]
    if op == "count":
        store.hincr(counters, {str(args[1]): int(args[2])})
        return [int(store.hgetall(counters)[str(args[1])]), 0]
    if op == "failed":
        store.hincr(counters, {"failed_for_good": 1})
        record, corrupt = _load(store, record_key)
        if record is None:
            return [0, corrupt]
        if record["remediations"]:
            store.hincr(counters, {"false_positives": int(record["remediations"])})
        store.delete(record_key)
        return [int(record["remediations"]), corrupt]
    raise ValueError(f"knowledge script: unknown op {op!r}")


SCRIPT = Script.from_file(Path(__file__).with_name("scripts") / "knowledge.lua", knowledge_script)


@dataclass(frozen=True)
class KnowledgeMetrics:
    """A snapshot of what the cluster learned and how well it applied it (all from counters)."""

    total_lessons: int = 0
    crashes: int = 0
    known_pattern_crashes: int = 0
    auto_remediated: int = 0
    remediations_applied: int = 0
    recoveries: int = 0
    recovery_ms_total: int = 0
    escalations: int = 0
    dead_letters: int = 0
    failed_for_good: int = 0
    false_positives: int = 0
    auto_recovery_ms_total: int = 0
    recovered_crashes: int = 0
    recurring_crashes: int = 0
    remediations_by_action: dict[str, int] = field(default_factory=dict, hash=False)
    recoveries_by_action: dict[str, int] = field(default_factory=dict, hash=False)

    @property
    def auto_remediated_pct(self) -> float | None:
        """Auto-remediated known-pattern crashes, in percent of known-pattern crashes."""
        return 100.0 * self.auto_remediated / self.known_pattern_crashes if self.known_pattern_crashes else None

    @property
    def mean_time_to_recovery_s(self) -> float | None:
        """Mean seconds from an auto-remediated crash to its re-run's success."""
        return self.auto_recovery_ms_total / self.auto_remediated / 1000.0 if self.auto_remediated else None

    @property
    def task_recovery_s(self) -> float | None:
        """Mean seconds from a message's first crash to its eventual success."""
        return self.recovery_ms_total / self.recoveries / 1000.0 if self.recoveries else None

    @property
    def attempts_per_recovery(self) -> float | None:
        """Crashes per message that eventually succeeded."""
        return self.recovered_crashes / self.recoveries if self.recoveries else None

    @property
    def recovery_rate_by_action(self) -> dict[str, float]:
        """Per action: re-runs that succeeded / times applied."""
        return {name: min(1.0, self.recoveries_by_action.get(name, 0) / applied)
                for name, applied in sorted(self.remediations_by_action.items()) if applied}

    @property
    def escalation_rate(self) -> float | None:
        """Escalations per crash (0..1)."""
        return self.escalations / self.crashes if self.crashes else None

    @property
    def false_positive_rate(self) -> float | None:
        """Remediations followed by a failure for good, per remediation applied (0..1)."""
        return self.false_positives / self.remediations_applied if self.remediations_applied else None

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict with the counts and the derived rates (None: nothing observed yet)."""
        return {
            "total_lessons": self.total_lessons,
            "crashes": self.crashes,
            "known_pattern_crashes": self.known_pattern_crashes,
            "recurring_crashes": self.recurring_crashes,
            "auto_remediated": self.auto_remediated,
            "auto_remediated_pct": self.auto_remediated_pct,
            "remediations_applied": self.remediations_applied,
            "remediations_by_action": dict(sorted(self.remediations_by_action.items())),
            "recoveries_by_action": dict(sorted(self.recoveries_by_action.items())),
            "recovery_rate_by_action": self.recovery_rate_by_action,
            "recoveries": self.recoveries,
            "mean_time_to_recovery_s": self.mean_time_to_recovery_s,
            "task_recovery_s": self.task_recovery_s,
            "attempts_per_recovery": self.attempts_per_recovery,
            "escalations": self.escalations,
            "escalation_rate": self.escalation_rate,
            "dead_letters": self.dead_letters,
            "failed_for_good": self.failed_for_good,
            "false_positives": self.false_positives,
            "false_positive_rate": self.false_positive_rate,
        }


class MetricsRecorder:
    """The calls the engine makes as a supervised task's story unfolds.

    Contract with the engine, per task id (a Celery task id, the same across its retries):

    * :meth:`crash` on every supervised crash, ``known`` when its fingerprint had a lesson;
    * :meth:`remediated` when a remediation is applied to it, :meth:`escalated` on escalation;
    * :meth:`succeeded` when it finally succeeds **only if it crashed before** (the engine
      knows from ``request.retries > 0`` or its own bookkeeping): the success path of a task
      that never crashed must not pay even the one round trip this call costs;
    * :meth:`failed_for_good` when it is given up (dead-lettered, retries exhausted...).

    Every method is one round trip and never raises for a store outage. ``when`` is seconds
    since the epoch; None means the store's clock (Redis ``TIME``).
    """

    def __init__(self, store: Store, keys: Keys, *, recovery_ttl_s: float = 86_400.0) -> None:
        self.store = store
        self.keys = keys
        self.recovery_ttl_s = as_seconds("recovery_ttl_s", recovery_ttl_s)
        self.counters_key = keys.key("knowledge")
        self._ttl_ms = max(1, int(self.recovery_ttl_s * 1000))
        self._warning = RateLimitedWarning()

    def recovery_key(self, task_id: str) -> str:
        """``prismatic:{<ns>}:recovery:<task_id>``."""
        return self.keys.key("recovery", self._task_id(task_id))

    def crash(self, task_id: str, known: bool, when: float | None = None, *, recurring: bool = False) -> int:
        """Count a crash; the first one of a task starts its recovery clock. Returns the task's crash count.

        ``known``: its lesson held a remediation known to work; ``recurring``: its fingerprint was seen before.
        """
        return self._run("crash", task_id, ["1" if known else "0", time_arg(when), self._ttl_ms,
                                            "1" if recurring else "0"])

    def remediated(self, task_id: str, action: str) -> bool:
        """Count a remediation applied to the task; True when it follows a known-pattern crash."""
        name = sanitize(action, limit=_ID_LIMIT) or "unknown"
        return self._run("remediated", task_id, [name, self._ttl_ms]) == 1

    def escalated(self, task_id: str) -> None:
        """Count an escalation to operators (one round trip)."""
        self._task_id(task_id)
        self.store.run(SCRIPT, [self.counters_key, self.recovery_key(task_id)], ["count", "escalations", 1])

    # script calls, to batch several facts of one crash in one round trip (Store.run_many) ----------
    def crash_call(self, task_id: str, known: bool, when: float | None = None, *,
                   recurring: bool = False) -> ScriptCall:
        """:meth:`crash` as a script call."""
        return self._call("crash", task_id, ["1" if known else "0", time_arg(when), self._ttl_ms,
                                             "1" if recurring else "0"])

    def remediated_call(self, task_id: str, action: str) -> ScriptCall:
        """:meth:`remediated` as a script call."""
        return self._call("remediated", task_id, [sanitize(action, limit=_ID_LIMIT) or "unknown", self._ttl_ms])

    def count_call(self, task_id: str, counter: str, amount: int = 1) -> ScriptCall:
        """Add ``amount`` to one counter (``escalations``, ``dead_letters``) as a script call."""
        if counter not in COUNTERS:
            raise ValueError(f"unknown knowledge counter {counter!r}")
        return self._call("count", task_id, [counter, amount])

    def failed_call(self, task_id: str) -> ScriptCall:
        """:meth:`failed_for_good` as a script call."""
        return self._call("failed", task_id, [])

    def succeeded_call(self, task_id: str, when: float | None = None, *, applied_at: float | None = None,
                       known: bool = False, action: str = "") -> ScriptCall:
        """:meth:`succeeded` as a script call."""
        return self._call("succeeded", task_id, [time_arg(when), time_arg(applied_at) if applied_at is not None
                                                 else "", "1" if known else "0", sanitize(action, limit=_ID_LIMIT)])

    def succeeded(self, task_id: str, when: float | None = None, *, applied_at: float | None = None,
                  known: bool = False, action: str = "") -> float | None:
        """The task succeeded: if it had crashed, count a recovery and return its duration in seconds.

        ``action`` is the remediation its last re-run got, applied at ``applied_at`` (the last crash)
        after a crash of a known pattern when ``known``: that attempt is counted per action and,
        when known, as auto-remediated. None when the task had no recovery record (it never
        crashed, or the record expired).
        """
        call = self.succeeded_call(task_id, when, applied_at=applied_at, known=known, action=action)
        ms = self.reply(call, self.store.run(call.script, call.keys, call.args))
        return None if ms < 0 else ms / 1000.0

    def failed_for_good(self, task_id: str) -> int:
        """The task is given up: every remediation applied to it counts as a false positive. Returns how many."""
        return self._run("failed", task_id, [])

    def snapshot(self) -> KnowledgeMetrics:
        """The metrics now, from the counters and the lessons index."""
        raw = self.store.hgetall(self.counters_key)
        values: dict[str, int] = {}
        by_action: dict[str, int] = {}
        recovered: dict[str, int] = {}
        for name, text in raw.items():
            try:
                number = int(text)
            except ValueError:
                self._warning.warn("knowledge-corrupt-counter", key=self.counters_key, field=name, value=text[:50])
                continue
            if name.startswith("action:"):
                by_action[name[len("action:"):]] = number
            elif name.startswith("recovered:"):
                recovered[name[len("recovered:"):]] = number
            elif name in COUNTERS:
                values[name] = number
        lessons = self.store.run(LESSON_SCRIPT, [self.keys.key("lessons")], ["count"])
        return KnowledgeMetrics(
            total_lessons=int(lessons) if isinstance(lessons, int) else 0, remediations_by_action=by_action,
            recoveries_by_action=recovered, **values
        )

    # helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _task_id(task_id: str) -> str:
        clean = sanitize(task_id, limit=_ID_LIMIT)
        if not clean:
            raise ValueError("task_id must not be empty")
        return clean

    def _call(self, op: str, task_id: str, args: list[Scalar]) -> ScriptCall:
        return ScriptCall(SCRIPT, [self.counters_key, self.recovery_key(task_id)], [op, *args])

    def _run(self, op: str, task_id: str, args: list[Scalar]) -> int:
        call = self._call(op, task_id, args)
        return self.reply(call, self.store.run(call.script, call.keys, call.args))

    def reply(self, call: ScriptCall, reply: object) -> int:
        """A knowledge script call's result (-1 for an unreadable ``succeeded``, else 0), warning on corruption."""
        op, key = str(call.args[0]), call.keys[1]
        if not isinstance(reply, list) or len(reply) != 2 or not all(isinstance(v, int) for v in reply):
            self._warning.warn("knowledge-unexpected-reply", key=key, op=op, reply=repr(reply)[:200])
            return -1 if op == "succeeded" else 0
        if reply[1] == 1:
            self._warning.warn("knowledge-corrupt-record", key=key, op=op, action="ignored")
        return int(reply[0])
