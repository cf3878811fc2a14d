"""The Redis store: shared by every worker on every host, degraded never fatal.

Every ``redis.RedisError`` is caught here. The failed operation is answered by
an in-process :class:`MemoryStore` (decisions fall back to local state), a
rate-limited warning is logged, and Redis is tried again after
``retry_s`` seconds; the client reconnects by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis

from ..log import RateLimitedWarning, get_logger, log_event
from .base import Scalar, Script, ScriptCall, Store, StreamEntry, decode_json, encode_json, safe_url
from .memory import MemoryStore

__all__ = ["RedisStore"]

T = TypeVar("T")
logger = get_logger("store")


_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _sha(script: Script) -> str:
    """The SHA1 Redis knows ``script`` by (EVALSHA)."""
    return hashlib.sha1(script.lua.encode("utf-8")).hexdigest()


class RedisStore(Store):
    """A :class:`Store` on one Redis server (``redis://``, ``rediss://`` or ``unix://`` URL)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.display_url = safe_url(url)
        self.retry_s = retry_s
        self.client: redis.Redis = client or redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            encoding_errors="replace",
            health_check_interval=30,
        )
        self.fallback = MemoryStore()
        self._clock = clock
        self._retry_at = 0.0
        self._warning = RateLimitedWarning()
        self._refused = RateLimitedWarning()
        self._scripts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.degraded = False
        self.failures = 0
        _stores.add(self)

    def _after_fork(self) -> None:
        """A forked child starts with fresh locks (a parent thread may have held them).

        The client's connection pool too: redis-py resets its pool in a child under the
        inherited pool lock, so a pool process forked while a worker thread held that lock
        (a heartbeat, a counter flush) would block on its first command, for good.
        """
        self._lock = threading.Lock()
        self.fallback.lock = threading.RLock()
        pool = getattr(self.client, "connection_pool", None)
        for name in ("_fork_lock", "_lock"):
            if hasattr(pool, name):
                setattr(pool, name, threading.RLock())

    # the one guard every operation goes through -----------------------------------
    def _guard(self, on_redis: Callable[[redis.Redis], T], on_memory: Callable[[MemoryStore], T]) -> T:
        if self.degraded and self._clock() < self._retry_at:
            return on_memory(self.fallback)
        try:
            result = on_redis(self.client)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._degrade(exc)
            return on_memory(self.fallback)
        except redis.RedisError as exc:
            # The server answered but refused (e.g. WRONGTYPE on a foreign key): not an
            # outage, so Redis stays in use; this one answer comes from local state.
            self._refused.warn("store-command-refused", url=self._safe_url(), error=str(exc)[:200])
            return on_memory(self.fallback)
        if self.degraded:
            self.degraded = False
            log_event(logging.WARNING, "store-recovered", logger, url=self._safe_url())
        return result

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
    def ping(self) -> bool:
        return self._guard(lambda r: bool(r.ping()), lambda m: False)

    def time(self) -> float:
        def server_time(r: redis.Redis) -> float:
            now = r.time()  # TIME answers (seconds, microseconds)
            return float(now[0]) + float(now[1]) / 1e6

        return self._guard(server_time, lambda m: time.time())

    def get_json(self, key: str) -> Any:
        return self._guard(lambda r: decode_json(key, r.get(key)), lambda m: m.get_json(key))

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return []
        return self._guard(
            lambda r: [decode_json(k, v) for k, v in zip(keys, r.mget(list(keys)), strict=True)],
            lambda m: m.get_many(keys),
        )

    def set_json(self, key: str, value: Any, *, ttl_s: float | None = None) -> None:
        encoded = encode_json(value)
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        self._guard(lambda r: r.set(key, encoded, px=px), lambda m: m.set_json(key, value, ttl_s=ttl_s))

    def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return self._guard(lambda r: int(r.delete(*keys)), lambda m: m.delete(*keys))

    def incr(self, key: str, *, ttl_s: float) -> int:
        def bump(r: redis.Redis) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.incr(key)
            pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            return int(pipe.execute()[0])

        return self._guard(bump, lambda m: m.incr(key, ttl_s=ttl_s))

    def ttl(self, key: str) -> float | None:
        def pttl(r: redis.Redis) -> float | None:
            ms = int(r.pttl(key))
            return None if ms < 0 else ms / 1000.0

        return self._guard(pttl, lambda m: m.ttl(key))

    def hincr(self, key: str, increments: Mapping[str, int], *, ttl_s: float | None = None) -> None:
        if not increments:
            return

        def incr(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            for field, amount in increments.items():
                pipe.hincrby(key, field, amount)
            if ttl_s is not None:
                pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            pipe.execute()

        self._guard(incr, lambda m: m.hincr(key, increments, ttl_s=ttl_s))

    def hset(self, key: str, mapping: Mapping[str, Scalar]) -> None:
        if mapping:
            fields: dict[Any, Any] = dict(mapping)
            self._guard(lambda r: r.hset(key, mapping=fields), lambda m: m.hset(key, mapping))

    def hgetall(self, key: str) -> dict[str, str]:
        def read(r: redis.Redis) -> dict[str, str]:
            value = r.hgetall(key)
            return {str(k): str(v) for k, v in value.items()}

        return self._guard(read, lambda m: m.hgetall(key))

    def hdel(self, key: str, *fields: str) -> None:
        if fields:
            self._guard(lambda r: r.hdel(key, *fields), lambda m: m.hdel(key, *fields))

    def window_add(self, key: str, member: str, now: float, window_s: float, *, cap: int) -> int:
        def add(r: redis.Redis) -> int:
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
        def read(r: redis.Redis) -> list[tuple[str, float]]:
            rows: list[Any] = list(r.zrangebyscore(key, f"({now - window_s}", now, withscores=True))
            return [(str(row[0]), float(row[1])) for row in rows]

        return self._guard(read, lambda m: m.window_members(key, now, window_s))

    def list_push(self, key: str, value: Any, *, cap: int) -> int:
        encoded = encode_json(value)

        def append(r: redis.Redis) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.rpush(key, encoded)
            pipe.ltrim(key, -cap, -1)
            pipe.llen(key)
            return int(pipe.execute()[2])

        def push(r: redis.Redis) -> int:
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
        def read(r: redis.Redis) -> list[Any]:
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
        def read(r: redis.Redis) -> list[StreamEntry]:
            rows = r.xrevrange(key, count=count) or []
            return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in reversed(rows)]

        return self._guard(read, lambda m: m.stream_range(key, count))

    def scan(self, pattern: str) -> list[str]:
        return self._guard(
            lambda r: sorted(str(k) for k in r.scan_iter(match=pattern, count=500)), lambda m: m.scan(pattern)
        )

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Scalar]) -> Any:
        def call(r: redis.Redis) -> Any:
            registered = self._scripts.get(script.name)
            if registered is None:
                registered = self._scripts[script.name] = r.register_script(script.lua)
            return registered(keys=list(keys), args=list(args))

        return self._guard(call, lambda m: m.run(script, keys, args))

    def run_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        if not calls:
            return []

        def pipelined(r: redis.Redis) -> list[Any]:
            results: list[Any] = [None] * len(calls)
            pending = list(range(len(calls)))
            for _ in range(2):  # a second pass only for scripts the server did not have cached
                pipe = r.pipeline(transaction=False)
                for i in pending:
                    call = calls[i]
                    pipe.evalsha(_sha(call.script), len(call.keys), *call.keys, *call.args)
                replies = pipe.execute(raise_on_error=False)
                missing = []
                for i, reply in zip(pending, replies, strict=True):
                    if isinstance(reply, redis.exceptions.NoScriptError):
                        missing.append(i)
                    elif isinstance(reply, (redis.ConnectionError, redis.TimeoutError)):
                        raise reply
                    elif isinstance(reply, Exception):
                        # The server refused this one script (e.g. WRONGTYPE on a foreign key): only its
                        # answer comes from local state; the others' stay Redis's.
                        self._refused.warn("store-command-refused", url=self._safe_url(), error=str(reply)[:200])
                        call = calls[i]
                        results[i] = self.fallback.run(call.script, call.keys, call.args)
                    else:
                        results[i] = reply
                if not missing:
                    return results
                for lua in {calls[i].script.lua for i in missing}:
                    r.script_load(lua)
                pending = missing
            raise redis.exceptions.NoScriptError("scripts vanished from the server's cache twice in a row")

        return self._guard(pipelined, lambda m: m.run_many(calls))

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):  # closing a dead connection is not worth a warning
            self.client.close()
