"""Scripts on Redis: by SHA, one at a time or pipelined, and on a cluster only within one slot.

Every key of a namespace shares one hash tag, so one slot (see :mod:`prismatic_celery.store.keys`): a
script's keys are checked before anything is sent, and a pipelined script goes to the node serving them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterCrossSlotError, ClusterError, RedisClusterException

from .base import Script, ScriptCall
from .urls import Client

__all__ = ["OUTAGES", "cross_slot", "node_of", "pipeline_pass", "sha"]

#: The store cannot be reached, or the cluster cannot serve the slot: an outage, so degrade.
OUTAGES = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException)


def sha(script: Script) -> str:
    """The SHA1 Redis knows ``script`` by (EVALSHA)."""
    return hashlib.sha1(script.lua.encode("utf-8")).hexdigest()


def cross_slot(r: Client, keys: Sequence[str]) -> ClusterCrossSlotError | None:
    """On a cluster, one script cannot take keys of several slots (every key of a namespace shares one): the
    error answering it from local state, before anything is sent."""
    if not isinstance(r, RedisCluster) or len(keys) < 2:
        return None
    slots = {r.keyslot(key) for key in keys}  # type: ignore[no-untyped-call]  # unannotated in redis-py
    if len(slots) == 1:
        return None
    return ClusterCrossSlotError(f"a script's keys are in {len(slots)} slots: {', '.join(keys)[:200]}")


def node_of(r: Client, keys: Sequence[str]) -> dict[str, ClusterNode]:
    """On a cluster, the option sending a command on ``keys`` (one slot) to the node serving them, looked up in
    the client's slot table; else no option."""
    if isinstance(r, RedisCluster) and keys:
        return {"target_nodes": r.get_node_from_key(keys[0])}  # type: ignore[no-untyped-call]  # unannotated
    return {}


def pipeline_pass(
    r: Client, calls: Sequence[ScriptCall], pending: list[int], results: list[object],
    answer_locally: Callable[[ScriptCall, Exception], object],
) -> list[int]:
    """Send the ``pending`` calls in one pipeline and fill in their ``results``; the indexes of those whose
    script the server did not have cached. A script the server refused is answered by ``answer_locally``."""
    if not pending:
        return []
    pipe = r.pipeline(transaction=False)
    for i in pending:
        call = calls[i]
        # execute_command: a cluster pipeline refuses its evalsha() helper, not the command; and it would ask
        # a node which arguments are keys (COMMAND GETKEYS, a round trip per script) unless told the node
        pipe.execute_command("EVALSHA", sha(call.script), len(call.keys), *call.keys, *call.args,
                             **node_of(r, call.keys))
    missing = []
    for i, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, redis.exceptions.NoScriptError):
            missing.append(i)
        elif isinstance(reply, OUTAGES):
            raise reply
        elif isinstance(reply, Exception):
            results[i] = answer_locally(calls[i], reply)
        else:
            results[i] = reply
    return missing
