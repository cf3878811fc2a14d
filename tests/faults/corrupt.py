"""Hostile data at every key kind of a namespace: wrong types, garbage, pickles and Python expressions.

Every key kind the plugin reads or writes (README "Redis keys", plus the health, bulkhead and
shedding keys) is listed with its normal Redis type, so a test can plant a value of the wrong
type, or a value of the right type holding garbage, at each of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from prismatic_celery.store.keys import Keys

# (kind, name parts, normal type)
KINDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("worker", ("ghost@nowhere",), "string"),
    ("health", ("ghost@nowhere",), "string"),
    ("stats", ("ghost@nowhere",), "hash"),
    ("restarts", ("storage",), "zset"),
    ("restarts", ("sources",), "zset"),
    ("restart-totals", (), "hash"),
    ("budget", ("core",), "zset"),
    ("budget", ("osint",), "zset"),
    ("supervisor-budget", (), "zset"),
    ("cooldown", ("core",), "string"),
    ("cooldown", ("osint",), "string"),
    ("escalation", ("core",), "string"),
    ("escalation", ("osint",), "string"),
    ("pause", ("storage", "manual"), "string"),
    ("pause", ("cache", "rest_for_one:storage"), "string"),
    ("pause", ("cache", "cooldown"), "string"),
    ("pause", ("sources", "escalated"), "string"),
    ("pause", ("monitor", "circuit"), "string"),
    ("executions", ("storage",), "hash"),
    ("executions", ("sources",), "hash"),
    ("pattern", ("deadbeefdeadbeef",), "string"),
    ("recycle", ("evo",), "string"),
    ("events", (), "stream"),
    ("dlq", ("evo",), "list"),
    ("deaths", ("hostile-task-id",), "string"),
    ("circuit", ("dep",), "hash"),
    ("circuit", ("ghost",), "hash"),
    ("lesson", ("deadbeefdeadbeef",), "string"),
    ("lessons", (), "zset"),
    ("knowledge", (), "hash"),
    ("recovery", ("hostile-task-id",), "string"),
    ("leases", ("core",), "zset"),
    ("shed", ("cache",), "string"),
    ("backlog", (), "hash"),
    ("parked", ("cache",), "list"),
    ("shed-totals", (), "hash"),
)


def key(namespace: str, kind: str, parts: Iterable[str]) -> str:
    return Keys(namespace).key(kind, *parts)


def plant_wrong_types(client: redis.Redis, namespace: str, *, skip: Iterable[str] = ()) -> list[str]:
    """A value of another Redis type at every key kind (strings become lists, hashes strings, ...)."""
    planted = []
    for kind, parts, normal in KINDS:
        if kind in skip:
            continue
        name = key(namespace, kind, parts)
        client.delete(name)
        if normal == "string":
            client.rpush(name, "not", "a", "string")
        elif normal == "hash":
            client.set(name, "not a hash")
        elif normal == "zset":
            client.hset(name, mapping={"not": "a zset"})
        elif normal == "list":
            client.set(name, "not a list")
        else:
            client.set(name, "not a stream")
        planted.append(name)
    return planted


GARBAGE_STRINGS = ("{not json", "\xff\xfe garbage", "[1, 2, 3]", '{"until": "tomorrow", "reason": 7}', "null", "1e999")


def plant_garbage(client: redis.Redis, namespace: str, *, skip: Iterable[str] = ()) -> list[str]:
    """A value of the right type holding garbage at every key kind."""
    planted = []
    for index, (kind, parts, normal) in enumerate(KINDS):
        if kind in skip:
            continue
        name = key(namespace, kind, parts)
        client.delete(name)
        junk = GARBAGE_STRINGS[index % len(GARBAGE_STRINGS)]
        if normal == "string":
            client.set(name, b"\xff\xfe\x00garbage" if index % 2 else junk.encode())
        elif normal == "hash":
            client.hset(name, mapping={"state": "exploded", "fail_counter": "NaN", "seq": "-1e400",
                                       "open_until_ms": "tomorrow", "cache:started": "many", "x": junk,
                                       "permit:evil": "1e999"})
        elif normal == "zset":
            client.zadd(name, {"garbage": float("inf"), junk: -1.0, "": 0.0})
        elif normal == "list":
            client.rpush(name, junk, b"\xff\xfe", "[]", '{"no": "id"}', '{"id": 5, "task": null}', json.dumps({
                "id": "half-entry", "task": "faults.accept"}))
        else:
            client.xadd(name, {"type": "exploded", "time": "yesterday", "junk": junk})
        planted.append(name)
    return planted


def plant_payloads(client: redis.Redis, namespace: str, payloads: Iterable[bytes]) -> list[str]:
    """Each payload (a pickle, a Python expression) as every kind of value at every key kind:
    the string value, hash field values, list entries, sorted-set members, stream field values."""
    values = list(payloads)
    planted = []
    for kind, parts, normal in KINDS:
        name = key(namespace, kind, parts)
        client.delete(name)
        if normal == "string":
            client.set(name, values[len(planted) % len(values)])
        elif normal == "hash":
            client.hset(name, mapping={f"f{i}": v for i, v in enumerate(values)} | {"state": values[0]})
        elif normal == "zset":
            client.zadd(name, {v: float(i) for i, v in enumerate(values)})
        elif normal == "list":
            client.rpush(name, *values)
        else:
            client.xadd(name, {f"f{i}": v for i, v in enumerate(values)} | {"type": values[0]})
        planted.append(name)
    return planted
