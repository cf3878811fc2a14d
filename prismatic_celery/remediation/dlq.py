"""The dead-letter queue: messages the supervisor gave up on, kept whole for a person to replay.

One capped Redis list per domain, ``prismatic:{<ns>}:dlq:<domain>``, of JSON
entries: the original message (task name, id, args, kwargs, queue, priority,
headers needed to re-publish) and the failure context (exception, redacted
message and traceback, fingerprint, failure class, attempts, remediations
tried, reason). Replay takes the entry out atomically (Lua) and publishes it
once; if publishing fails the entry is put back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from celery import Celery

from ..log import get_logger, log_event
from ..store import MemoryStore, Script, Store
from ..store.base import Scalar, ScriptCall, decode_json, encode_json
from ..store.keys import Keys

__all__ = ["DeadLetter", "DeadLetterQueue", "dead_letter_entry"]

#: A dead letter as stored: JSON (see :func:`dead_letter_entry` for its fields).
DeadLetter = dict[str, object]

logger = get_logger("dlq")
TRACEBACK_LIMIT = 8000


def _take_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> str | None:
    items = store.raw(keys[0])
    if not isinstance(items, list):
        return None
    for index, raw in enumerate(items):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("id") == str(args[0]):
            del items[index]
            return str(raw)
    return None


TAKE = Script.from_file(Path(__file__).parent / "scripts" / "dlq_take.lua", _take_twin)


def _push_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[int | str]:
    items = store.raw(keys[0])
    aside = ""
    if items is not None and not isinstance(items, list):
        aside = f"{keys[0]}:corrupt:{int(store.clock() * 1000)}"
        store.set_raw(aside, items)
        store.delete(keys[0])
    length = store.list_push(keys[0], json.loads(str(args[0])), cap=int(args[1]))
    return [length, aside]


PUSH = Script.from_file(Path(__file__).parent / "scripts" / "dlq_push.lua", _push_twin)


def _json_safe(value: object) -> tuple[object, bool]:
    """``(value, True)`` when it round-trips through JSON, else ``(repr, False)``."""
    try:
        return json.loads(json.dumps(value)), True
    except (TypeError, ValueError):
        return repr(value)[:2000], False


def dead_letter_entry(
    *, task: str, task_id: str, args: Sequence[object] | None, kwargs: Mapping[str, object] | None, queue: str,
    domain: str, reason: str,
    exception: str = "", message: str = "", traceback: str = "", fingerprint: str = "", failure_class: str = "",
    attempts: int = 0, remediations: Sequence[str] = (), priority: int | None = None,
) -> DeadLetter:
    """A dead letter as stored. ``message`` and ``traceback`` must already be redacted."""
    safe_args, args_ok = _json_safe(list(args or ()))
    safe_kwargs, kwargs_ok = _json_safe(dict(kwargs or {}))
    return {
        "id": task_id, "task": task, "args": safe_args, "kwargs": safe_kwargs, "queue": queue, "domain": domain,
        "priority": priority, "replayable": args_ok and kwargs_ok, "reason": reason, "exception": exception,
        "message": message, "traceback": traceback[-TRACEBACK_LIMIT:], "fingerprint": fingerprint,
        "failure_class": failure_class, "attempts": attempts, "remediations": list(remediations), "at": time.time(),
    }


def _unreplayable(app: Celery, entry: Mapping[str, object], *, force: bool) -> str | None:
    """Why an entry must not be published (None when it may)."""
    task = entry.get("task")
    if not entry.get("replayable", False):
        return "its arguments were not stored as JSON"
    if not isinstance(task, str) or not task:
        return "it names no task"
    if not isinstance(entry.get("args", []), list) or not isinstance(entry.get("kwargs", {}), dict):
        return "its stored arguments are not a list and a mapping"
    if not force:
        app.loader.import_default_modules()
        if task not in app.tasks:
            return f"task {task!r} is not registered in this app (a worker would discard it); force to replay anyway"
    return None


class _PublishOptions(TypedDict, total=False):
    """What a replay passes to ``send_task`` besides the message."""

    task_id: str
    queue: str | None
    priority: int


def _options(entry: Mapping[str, object]) -> _PublishOptions:
    """The entry's task id, queue (None: the task's route) and priority (when it had one)."""
    queue, priority = entry.get("queue"), entry.get("priority")
    options: _PublishOptions = {"task_id": str(entry["id"]),
                                "queue": queue if isinstance(queue, str) and queue else None}
    if isinstance(priority, int):
        options["priority"] = priority
    return options


def _message(entry: Mapping[str, object]) -> tuple[str, list[object], dict[str, object]]:
    """The task name, args and kwargs of an entry :func:`_unreplayable` accepted."""
    task, args, kwargs = entry.get("task"), entry.get("args") or [], entry.get("kwargs") or {}
    if not isinstance(task, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError(f"dead letter {entry.get('id')} cannot be replayed: its message is malformed")
    return task, list(args), dict(kwargs)


@dataclass
class DeadLetterQueue:
    """The dead letters of every domain of one app."""

    store: Store
    keys: Keys
    max_entries: int = 10_000

    def key(self, domain: str) -> str:
        """``prismatic:{<ns>}:dlq:<domain>``."""
        return self.keys.key("dlq", domain)

    def push(self, entry: Mapping[str, object]) -> int:
        """Append a dead letter (oldest dropped beyond the cap); the list's new length."""
        call = self.push_call(entry)
        return self.pushed(call, self.store.run(call.script, call.keys, call.args))

    def push_call(self, entry: Mapping[str, object]) -> ScriptCall:
        """The script call appending ``entry`` (to batch with others in one round trip; see :meth:`pushed`)."""
        return ScriptCall(PUSH, [self.key(str(entry["domain"]))], [encode_json(entry), self.max_entries])

    def pushed(self, call: ScriptCall, reply: object) -> int:
        """The list's new length from a push's reply (warning when a foreign value was set aside)."""
        if not isinstance(reply, list) or len(reply) != 2:
            return 0
        if reply[1]:
            log_event(logging.WARNING, "store-key-set-aside", logger, key=call.keys[0], moved_to=str(reply[1]),
                      reason="held another type")
        return int(reply[0])

    def list(self, domain: str, *, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``domain``, oldest first (corrupt entries skipped)."""
        entries = self.store.list_range(self.key(domain), -limit, -1)
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]

    def get(self, domain: str, task_id: str) -> DeadLetter | None:
        """One dead letter by task id."""
        return next((e for e in self.store.list_range(self.key(domain)) if isinstance(e, dict)
                     and e.get("id") == task_id), None)

    def count(self, domain: str) -> int:
        """How many dead letters ``domain`` holds."""
        return self.store.list_len(self.key(domain))

    def purge(self, domain: str) -> int:
        """Delete every dead letter of ``domain``; how many there were."""
        count = self.count(domain)
        self.store.delete(self.key(domain))
        return count

    def take(self, domain: str, task_id: str) -> DeadLetter | None:
        """Remove and return one dead letter, atomically (two replays cannot both get it)."""
        raw = self.store.run(TAKE, [self.key(domain)], [task_id])
        if not raw:
            return None
        entry = decode_json(self.key(domain), raw)
        return entry if isinstance(entry, dict) else None

    def replay(self, app: Celery, domain: str, task_id: str, *, force: bool = False) -> str | None:
        """Publish one dead letter again, exactly once; the new task id (None when absent).

        The message carries its fingerprint, so when it succeeds the operator's resolution is
        recorded in its lesson (as the remediation ``operator_replay``).

        The replayed message keeps its task id (a result waiter still sees it) and
        starts with a fresh restart budget. An entry whose arguments could not be
        stored as JSON, whose arguments are malformed, or whose task this app does
        not know (unless ``force``) is refused (ValueError) and left in place.
        """
        entry = self.take(domain, task_id)
        if entry is None:
            return None
        problem = _unreplayable(app, entry, force=force)
        if problem:
            self.store.list_push(self.key(domain), entry, cap=self.max_entries)
            raise ValueError(f"dead letter {task_id} cannot be replayed: {problem}")
        try:
            task, args, kwargs = _message(entry)
            app.send_task(task, args=args, kwargs=kwargs,
                          headers={"prismatic_replayed": True, **_resolution_header(entry)}, **_options(entry))
        except Exception:
            self.store.list_push(self.key(domain), entry, cap=self.max_entries)
            raise
        log_event(logging.WARNING, "dead-letter-replayed", logger, domain=domain, task=entry["task"], id=task_id)
        return str(entry["id"])


def _resolution_header(entry: Mapping[str, object]) -> dict[str, object]:
    """The plugin's tracking header for a replayed dead letter: its success is an operator's resolution."""
    from ..lessons.learning import OPERATOR_REPLAY
    from ..supervision.crash import HEADER  # the engine imports this module

    fingerprint = entry.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        return {}
    now = round(time.time(), 3)
    return {HEADER: {"attempt": 0, "fp": fingerprint, "action": OPERATOR_REPLAY, "label": OPERATOR_REPLAY,
                     "rule": "operator", "known": False, "applied_at": now, "first_crash": now, "remediations": []}}
