"""The Redis store: shared by every worker on every host, degraded never fatal.

Every ``redis.RedisError`` is caught here, and every ``RedisClusterException`` (which is none).
The failed operation is answered by an in-process :class:`MemoryStore` (decisions fall back to
local state), a rate-limited warning is logged, and Redis is tried again after ``retry_s``
seconds; the client reconnects by itself. The URL says which deployment (see :mod:`.urls`): one
server, the master a Sentinel names (a failover is followed) or a Redis Cluster, where every
key of a namespace lives in one slot (see :mod:`prismatic_celery.store.keys`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script as RedisScript
from redis.exceptions import CrossSlotTransactionError, InvalidPipelineStack, RedisClusterException
from redis.sentinel import SentinelConnectionPool
from redis.typing import EncodableT, FieldT

from ..log import RateLimitedWarning, get_logger, log_event
from .base import Scalar, Script, ScriptCall, Store, StreamEntry, decode_json, encode_json, safe_url
from .memory import MemoryStore
from .scripting import OUTAGES, cross_slot, node_of, pipeline_pass
from .urls import Client, check_transport_options, connect, parse_store_url, reset_locks

__all__ = ["STORE_ERRORS", "RedisStore"]

T = TypeVar("T")
logger = get_logger("store")


#: Every error a store command may raise (a RedisClusterException is no RedisError).
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
#: The client refused one operation (keys of several slots): answered locally, Redis stays in use.
_CLUSTER_REFUSALS = (CrossSlotTransactionError, InvalidPipelineStack)

#: Behind Sentinel, how often the store asks which server is the master (see RedisStore._follow_master).
MASTER_CHECK_S = 1.0
#: After no Sentinel answered that question, how much longer until it is asked again.
SENTINELS_SILENT_S = 10.0

_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisStore(Store):
    """A :class:`Store` on Redis: one server, the master a Sentinel names, or a cluster (see :mod:`.urls`).

    ``transport_options`` is ``prismatic_store_transport_options`` (Sentinel's ``master_name``...).
    ``home_key`` is a key of the namespace: on a cluster, :meth:`ping` and :meth:`time` ask the node that
    serves the namespace's slot (the one that matters, and whose clock the namespace's scripts read).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        client: Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport_options: Mapping[str, object] | None = None,
        home_key: str | None = None,
    ) -> None:
        self.url = url
        self.display_url = safe_url(url)
        self.retry_s = retry_s
        self.target = parse_store_url(url)
        self.home_key = home_key
        self._options = check_transport_options("prismatic_store_transport_options", self.target, transport_options)
        self._timeout_s = timeout_s
        self._client: Client | None = client
        self._connect_lock = threading.Lock()
        if client is None and self.target.shape != "cluster":  # no I/O yet: made now, as redis-py's own clients
            self._client = connect(self.target, self._options, timeout_s=timeout_s)
        self.fallback = MemoryStore()
        self._clock = clock
        self._retry_at = 0.0
        self._master_checked_at = -float("inf")
        self._warning = RateLimitedWarning()
        self._refused = RateLimitedWarning()
        self._scripts: dict[str, RedisScript] = {}
        self._lock = threading.Lock()
        self.degraded = False
        self.failures = 0
        _stores.add(self)

    @property
    def client(self) -> Client:
        """The Redis client. A cluster's is made on first use (it asks a node for the topology), so this
        may raise one of :data:`STORE_ERRORS` while no node answers."""
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    self._client = connect(self.target, self._options, timeout_s=self._timeout_s)
        return self._client

    def _after_fork(self) -> None:
        """A forked child starts with fresh locks (a parent thread may have held them).

        The client's connection pools too: redis-py resets a pool in a child under the
        inherited pool lock, so a pool process forked while a worker thread held that lock
        (a heartbeat, a counter flush) would block on its first command, for good. A cluster
        client has one pool per node, and locks of its own around its topology.
        """
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self.fallback.lock = threading.RLock()
        if self._client is not None:
            reset_locks(self._client)

    # the one guard every operation goes through -----------------------------------
    def _guard(self, on_redis: Callable[[Client], T], on_memory: Callable[[MemoryStore], T]) -> T:
        if self.degraded and self._clock() < self._retry_at:
            return on_memory(self.fallback)
        try:
            client = self.client
            self._follow_master(client)
            result = on_redis(client)
        except _CLUSTER_REFUSALS as exc:
            return self._refuse(exc, on_memory)
        except OUTAGES as exc:
            self._degrade(exc)
            return on_memory(self.fallback)
        except redis.RedisError as exc:
            # The server answered but refused (e.g. WRONGTYPE on a foreign key): not an
            # outage, so Redis stays in use; this one answer comes from local state.
            return self._refuse(exc, on_memory)
        if self.degraded:
            self.degraded = False
            log_event(logging.WARNING, "store-recovered", logger, url=self._safe_url())
        return result

    def _follow_master(self, client: Client) -> None:
        """Behind Sentinel, ask the Sentinels for the master at most every :data:`MASTER_CHECK_S`: a failover is
        followed within that time. redis-py asks only when it opens a connection, and after a ``SENTINEL
        FAILOVER`` the old master keeps accepting writes (then lost) until Sentinel demotes it, ~10 s later.
        Advisory: while no Sentinel answers, the connections in use stay in use."""
        pool = getattr(client, "connection_pool", None)
        if not isinstance(pool, SentinelConnectionPool) or self._clock() < self._master_checked_at + MASTER_CHECK_S:
            return
        self._master_checked_at = self._clock()
        try:
            pool.get_master_address()  # type: ignore[no-untyped-call]  # drops idle connections to a former master
        except redis.RedisError:  # no Sentinel answers: not asked again for a while (each try costs timeouts)
            self._master_checked_at += SENTINELS_SILENT_S

    def _refuse(self, exc: Exception, on_memory: Callable[[MemoryStore], T]) -> T:
        self._refused.warn("store-command-refused", url=self._safe_url(), error=str(exc)[:200])
        return on_memory(self.fallback)

    def _degrade(self, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            self._retry_at = self._clock() + self.retry_s
            first = not self.degraded
            self.degraded = True
        if first:
            log_event(
                logging.WARNING, "store-unavailable", logger, url=self._safe_url(),
                error=f"{type(exc).__name__}: {exc}"[:300], fallback="in-process state",
            )
        else:
            self._warning.warn("store-still-unavailable", url=self._safe_url(), error=type(exc).__name__)

    def _safe_url(self) -> str:
        return self.display_url

    # Store interface ------------------------------------------------------------------
    def _home(self, r: Client) -> dict[str, ClusterNode]:
        """On a cluster, the option sending a command to the node serving :attr:`home_key` (else none)."""
        return node_of(r, () if self.home_key is None else (self.home_key,))

    def ping(self) -> bool:
        return self._guard(lambda r: bool(r.ping(**self._home(r))), lambda m: False)

    def time(self) -> float:
        def server_time(r: Client) -> float:
            now = r.time(**self._home(r))  # TIME answers (seconds, microseconds)
            return float(now[0]) + float(now[1]) / 1e6

        return self._guard(server_time, lambda m: time.time())

    def get_json(self, key: str) -> Any:
        return self._guard(lambda r: decode_json(key, r.get(key)), lambda m: m.get_json(key))

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return []

        def read(r: Client) -> list[object]:
            # A cluster's MGET must stay in one slot: mget_nonatomic sends one MGET per slot (one in all for
            # the keys of a namespace, which share their hash tag).
            raw = r.mget_nonatomic(list(keys)) if isinstance(r, RedisCluster) else r.mget(list(keys))
            return [decode_json(k, v) for k, v in zip(keys, raw, strict=True)]

        return self._guard(read, lambda m: m.get_many(keys))

    def set_json(self, key: str, value: object, *, ttl_s: float | None = None) -> None:
        encoded = encode_json(value)
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        self._guard(lambda r: r.set(key, encoded, px=px), lambda m: m.set_json(key, value, ttl_s=ttl_s))

    def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return self._guard(lambda r: int(r.delete(*keys)), lambda m: m.delete(*keys))

    def incr(self, key: str, *, ttl_s: float) -> int:
        def bump(r: Client) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.incr(key)
            pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            return int(pipe.execute()[0])

        return self._guard(bump, lambda m: m.incr(key, ttl_s=ttl_s))

    def ttl(self, key: str) -> float | None:
        def pttl(r: Client) -> float | None:
            ms = int(r.pttl(key))
            return None if ms < 0 else ms / 1000.0

        return self._guard(pttl, lambda m: m.ttl(key))

    def hincr(self, key: str, increments: Mapping[str, int], *, ttl_s: float | None = None) -> None:
        if not increments:
            return

        def incr(r: Client) -> None:
            pipe = r.pipeline(transaction=False)
            for field, amount in increments.items():
                pipe.hincrby(key, field, amount)
            if ttl_s is not None:
                pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            pipe.execute()

        self._guard(incr, lambda m: m.hincr(key, increments, ttl_s=ttl_s))

    def hset(self, key: str, mapping: Mapping[str, Scalar]) -> None:
        if mapping:
            fields: dict[FieldT, EncodableT] = {k: v for k, v in mapping.items()}
            self._guard(lambda r: r.hset(key, mapping=fields), lambda m: m.hset(key, mapping))

    def hgetall(self, key: str) -> dict[str, str]:
        def read(r: Client) -> dict[str, str]:
            value = r.hgetall(key)
            return {str(k): str(v) for k, v in value.items()}

        return self._guard(read, lambda m: m.hgetall(key))

    def hdel(self, key: str, *fields: str) -> None:
        if fields:
            self._guard(lambda r: r.hdel(key, *fields), lambda m: m.hdel(key, *fields))

    def window_add(self, key: str, member: str, now: float, window_s: float, *, cap: int) -> int:
        def add(r: Client) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.zadd(key, {member: now})
            pipe.zremrangebyscore(key, "-inf", now - window_s)
            pipe.zremrangebyrank(key, 0, -(cap + 1))
            pipe.zcard(key)
            pipe.pexpire(key, max(1, int(window_s * 1000)))
            return int(pipe.execute()[3])

        return self._guard(add, lambda m: m.window_add(key, member, now, window_s, cap=cap))

    def window_count(self, key: str, now: float, window_s: float) -> int:
        return self._guard(
            lambda r: int(r.zcount(key, f"({now - window_s}", now)),
            lambda m: m.window_count(key, now, window_s),
        )

    def window_members(self, key: str, now: float, window_s: float) -> list[tuple[str, float]]:
        def read(r: Client) -> list[tuple[str, float]]:
            rows: list[Any] = list(r.zrangebyscore(key, f"({now - window_s}", now, withscores=True))
            return [(str(row[0]), float(row[1])) for row in rows]

        return self._guard(read, lambda m: m.window_members(key, now, window_s))

    def list_push(self, key: str, value: object, *, cap: int) -> int:
        encoded = encode_json(value)

        def append(r: Client) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.rpush(key, encoded)
            pipe.ltrim(key, -cap, -1)
            pipe.llen(key)
            return int(pipe.execute()[2])

        def push(r: Client) -> int:
            try:
                return append(r)
            except redis.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                # Lists hold data (dead letters, parked messages) that must not live only in this
                # process: set the foreign value aside, keep it for an operator, and store ours.
                aside = f"{key}:corrupt:{int(time.time() * 1000)}"
                r.rename(key, aside)
                log_event(logging.WARNING, "store-key-set-aside", logger, key=key, moved_to=aside,
                          reason="held another type")
                return append(r)

        return self._guard(push, lambda m: m.list_push(key, value, cap=cap))

    def list_range(self, key: str, start: int = 0, stop: int = -1) -> list[Any]:
        def read(r: Client) -> list[object]:
            decoded = [decode_json(key, raw) for raw in r.lrange(key, start, stop)]
            return [d for d in decoded if d is not None]

        return self._guard(read, lambda m: m.list_range(key, start, stop))

    def list_len(self, key: str) -> int:
        return self._guard(lambda r: int(r.llen(key)), lambda m: m.list_len(key))

    def stream_add(self, key: str, fields: Mapping[str, str], *, maxlen: int) -> None:
        self._guard(
            lambda r: r.xadd(key, {k: v for k, v in fields.items()}, maxlen=maxlen, approximate=False),
            lambda m: m.stream_add(key, fields, maxlen=maxlen),
        )

    def stream_range(self, key: str, count: int) -> list[StreamEntry]:
        def read(r: Client) -> list[StreamEntry]:
            rows = r.xrevrange(key, count=count) or []
            return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in reversed(rows)]

        return self._guard(read, lambda m: m.stream_range(key, count))

    def scan(self, pattern: str) -> list[str]:
        return self._guard(
            lambda r: sorted(str(k) for k in r.scan_iter(match=pattern, count=500)), lambda m: m.scan(pattern)
        )

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Scalar]) -> Any:
        def call(r: Client) -> object:
            crossing = cross_slot(r, keys)
            if crossing is not None:
                raise crossing
            registered = self._scripts.get(script.name)
            if registered is None:
                registered = self._scripts[script.name] = r.register_script(script.lua)
            return registered(keys=list(keys), args=list(args))

        return self._guard(call, lambda m: m.run(script, keys, args))

    def run_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        if not calls:
            return []

        def pipelined(r: Client) -> list[object]:
            results: list[object] = [None] * len(calls)
            pending = []
            for i, call in enumerate(calls):
                crossing = cross_slot(r, call.keys)
                if crossing is None:
                    pending.append(i)
                else:
                    results[i] = self._answer_locally(call, crossing)
            for _ in range(2):  # a second pass only for scripts the server did not have cached
                missing = pipeline_pass(r, calls, pending, results, self._answer_locally)
                if not missing:
                    return results
                for lua in {calls[i].script.lua for i in missing}:
                    r.script_load(lua)
                pending = missing
            raise redis.exceptions.NoScriptError("scripts vanished from the server's cache twice in a row")

        return self._guard(pipelined, lambda m: m.run_many(calls))

    def _answer_locally(self, call: ScriptCall, error: Exception) -> object:
        """The server refused this one script (e.g. WRONGTYPE on a foreign key): only its answer comes from
        local state; the others' stay Redis's."""
        return self._refuse(error, lambda m: m.run(call.script, call.keys, call.args))

    def close(self) -> None:
        client = self._client
        if client is None:
            return
        with contextlib.suppress(*STORE_ERRORS):  # closing a dead connection is not worth a warning
            client.close()
            sentinels = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
            if sentinels is not None and hasattr(sentinels, "close"):  # its connections to the Sentinels (redis-py 8.1)
                sentinels.close()
