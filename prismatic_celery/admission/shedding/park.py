"""Parked messages: a capped list per queue that ``shed replay`` puts back on the broker.

``prismatic:{<ns>}:parked:<queue>`` is a list of JSON records (oldest first),
each with what is needed to publish the message again: task name, id, args,
kwargs, queue, priority and the execution options (headers, retries, root and
parent ids, links...). ``prismatic:{<ns>}:shed-totals`` counts, per queue,
``<queue>:parked``, ``:dropped``, ``:overflowed`` (oldest entries the cap
dropped), ``:replayed`` and ``:purged``.

Replay takes a batch atomically (Lua), publishes each message, and puts back
at the head of the list whatever it could not publish (also on Ctrl-C), so a
message is published exactly once unless the replaying process is killed
between taking and publishing a batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery

from ...log import get_logger, log_event
from ...store import MemoryStore, Script, Store
from ...store.base import Scalar
from ...store.keys import Keys
from .priority import REPLAYED_HEADER

if TYPE_CHECKING:
    from celery.app.task import Context

    from ...supervision.locate import AnyTask

__all__ = [
    "ParkOutcome",
    "ReplayReport",
    "park",
    "park_record",
    "parked_key",
    "peek",
    "purge",
    "replay",
    "republish",
    "totals_key",
]

logger = get_logger("shedding")
_SCRIPTS = Path(__file__).parent / "scripts"
# Execution options that must not travel with a replayed message (it runs now, once).
_NOT_REPLAYED = frozenset({"task_id", "eta", "countdown"})


def parked_key(keys: Keys, queue: str) -> str:
    """``prismatic:{<ns>}:parked:<queue>``: the queue's parked messages (list of JSON, oldest first)."""
    return keys.key("parked", queue)


def totals_key(keys: Keys) -> str:
    """``prismatic:{<ns>}:shed-totals``: hash of shedding counters per queue."""
    return keys.key("shed-totals")


def _list(store: MemoryStore, key: str) -> list[str]:
    items = store.raw(key)
    if not isinstance(items, list):
        items = []
        store.set_raw(key, items)
    return items


def _park_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[int]:
    items = _list(store, keys[0])
    items.append(str(args[0]))
    cap, queue = int(args[1]), str(args[2])
    overflowed = max(0, len(items) - cap)
    if overflowed:
        del items[:overflowed]
        store.hincr(keys[1], {f"{queue}:overflowed": overflowed})
    store.hincr(keys[1], {f"{queue}:parked": 1})
    return [len(items), overflowed]


def _take_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> list[str]:
    items = _list(store, keys[0])
    taken = items[: int(args[0])]
    del items[: len(taken)]
    return taken


def _putback_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    items = _list(store, keys[0])
    items[:0] = [str(a) for a in args]
    return len(items)


def _purge_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    count = len(_list(store, keys[0]))
    store.delete(keys[0])
    if count:
        store.hincr(keys[1], {f"{args[0]}:purged": count})
    return count


PARK = Script.from_file(_SCRIPTS / "park.lua", _park_twin)
TAKE = Script.from_file(_SCRIPTS / "take.lua", _take_twin)
PUTBACK = Script.from_file(_SCRIPTS / "putback.lua", _putback_twin)
PURGE = Script.from_file(_SCRIPTS / "purge.lua", _purge_twin)


def park_record(task: AnyTask, queue: str, *, request: Context, **context: object) -> str | None:
    """A message as a JSON record; None when its arguments are not JSON (it cannot be parked).

    ``request`` is the message's Context (what the task would see as ``task.request``).
    """
    delivery = request.delivery_info if isinstance(request.delivery_info, dict) else {}
    options = {k: v for k, v in request.as_execution_options().items()
               if v is not None and k not in _NOT_REPLAYED}
    record = {
        "id": request.id, "task": task.name, "queue": queue, "priority": delivery.get("priority"),
        "args": list(request.args or ()), "kwargs": dict(request.kwargs or {}), "options": options, **context,
    }
    try:
        return json.dumps(record, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ParkOutcome:
    """Where a parked message went."""

    length: int
    overflowed: int
    durable: bool
    """False when the store answered from in-process state (Redis unreachable): run the message instead."""


def _store_failures(store: Store) -> tuple[bool, int]:
    return bool(getattr(store, "degraded", False)), int(getattr(store, "failures", 0))


def park(store: Store, keys: Keys, queue: str, record: str, *, cap: int) -> ParkOutcome:
    """Append ``record`` to the queue's parked list, dropping the oldest beyond ``cap`` (one round trip)."""
    before = _store_failures(store)
    raw = store.run(PARK, [parked_key(keys, queue), totals_key(keys)], [record, cap, queue])
    after = _store_failures(store)
    durable = not before[0] and not after[0] and before[1] == after[1]
    length, overflowed = (int(raw[0]), int(raw[1])) if raw else (0, 0)
    if overflowed:
        log_event(logging.WARNING, "shed-park-overflow", logger, queue=queue, dropped_oldest=overflowed, cap=cap)
    return ParkOutcome(length=length, overflowed=overflowed, durable=durable)


def _decode(raw: object) -> dict[str, Any] | None:
    if not isinstance(raw, (str, bytes, bytearray)):
        return None
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str) or not isinstance(data.get("id"), str):
        return None
    return data


def peek(store: Store, keys: Keys, queue: str, *, limit: int) -> list[dict[str, Any]]:
    """The oldest ``limit`` parked messages of ``queue`` (without removing them)."""
    return [d for d in store.list_range(parked_key(keys, queue), 0, max(0, limit - 1)) if isinstance(d, dict)]


def republish(app: Celery, record: dict[str, Any], *, producer: Any = None) -> None:
    """Publish a parked message again: same id, task, arguments, queue, priority and options.

    It carries the header ``prismatic_replayed`` (incremented), so it is not shed again.
    """
    options = {k: v for k, v in dict(record.get("options") or {}).items() if k not in _NOT_REPLAYED}
    headers = dict(options.pop("headers", None) or {})
    headers[REPLAYED_HEADER] = int(headers.get(REPLAYED_HEADER) or 0) + 1
    options.pop("queue", None)
    priority = record.get("priority")
    if priority is not None:
        options["priority"] = priority
    app.send_task(
        str(record["task"]), args=list(record.get("args") or ()), kwargs=dict(record.get("kwargs") or {}),
        task_id=str(record["id"]), queue=str(record["queue"]), headers=headers, producer=producer, **options,
    )


@dataclass
class ReplayReport:
    """What a replay of one queue did."""

    queue: str
    replayed: int = 0
    skipped_corrupt: int = 0
    put_back: int = 0
    error: str | None = None
    ids: list[str] = field(default_factory=list)


def replay(
    app: Celery, store: Store, keys: Keys, queue: str, *, limit: int | None = None, batch: int = 100,
    publish: Callable[[dict[str, Any], Any], None] | None = None,
) -> ReplayReport:
    """Publish up to ``limit`` parked messages of ``queue`` again, oldest first, each exactly once.

    A batch is taken atomically; each message is published; what was not
    published (an error, Ctrl-C) is put back at the head of the list in order.
    A corrupt record is skipped with a warning (it cannot be published).
    """
    report = ReplayReport(queue=queue)
    key = parked_key(keys, queue)
    send = publish or (lambda record, producer: republish(app, record, producer=producer))
    with app.producer_or_acquire() as producer:
        while limit is None or report.replayed < limit:
            size = batch if limit is None else min(batch, limit - report.replayed)
            taken = [str(raw) for raw in (store.run(TAKE, [key], [size]) or [])]
            if not taken:
                break
            done = 0
            try:
                for raw in taken:
                    record = _decode(raw)
                    if record is None:
                        report.skipped_corrupt += 1
                        log_event(logging.WARNING, "shed-replay-corrupt", logger, queue=queue, entry=raw[:200])
                    else:
                        send(record, producer)
                        report.replayed += 1
                        report.ids.append(str(record["id"]))
                    done += 1
            except Exception as exc:
                report.error = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                rest = taken[done:]
                if rest:
                    store.run(PUTBACK, [key], rest)
                    report.put_back += len(rest)
            if report.error is not None or len(taken) < size:
                break
    if report.replayed:
        store.hincr(totals_key(keys), {f"{queue}:replayed": report.replayed})
    return report


def purge(store: Store, keys: Keys, queue: str) -> int:
    """Delete every parked message of ``queue``; how many there were."""
    return int(store.run(PURGE, [parked_key(keys, queue), totals_key(keys)], [queue]) or 0)
