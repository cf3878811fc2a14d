"""The in-process twin of the Redis store: same interface, same semantics, one process.

Used by unit tests, by the embedded demo, and by :class:`RedisStore` as the
fallback while Redis is unreachable.
"""

from __future__ import annotations

import fnmatch
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import Scalar, Script, ScriptCall, Store, StreamEntry, decode_json, encode_json

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A thread-safe dictionary with Redis-like expiry; ``clock`` is injectable."""

    shared = False
    display_url = "memory://"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self._data: dict[str, object] = {}
        self._expires: dict[str, float] = {}
        self._stream_ids = itertools.count(1)

    # internal helpers (also used by scripts' Python twins) ---------------------
    def raw(self, key: str, default: object = None) -> Any:
        """The stored object at ``key`` after expiry (str, dict, list or sorted-set dict)."""
        with self.lock:
            deadline = self._expires.get(key)
            if deadline is not None and deadline <= self.clock():
                self._data.pop(key, None)
                self._expires.pop(key, None)
            return self._data.get(key, default)

    def set_raw(self, key: str, value: object, *, ttl_s: float | None = None) -> None:
        """Replace the object at ``key`` (``ttl_s`` None keeps no expiry)."""
        with self.lock:
            self._data[key] = value
            if ttl_s is None:
                self._expires.pop(key, None)
            else:
                self._expires[key] = self.clock() + ttl_s

    def expire(self, key: str, ttl_s: float) -> None:
        """Set a key's time to live."""
        with self.lock:
            if self.raw(key) is not None:
                self._expires[key] = self.clock() + ttl_s

    # Store interface --------------------------------------------------------------
    def ping(self) -> bool:
        return True

    def time(self) -> float:
        return self.clock()

    def get_json(self, key: str) -> Any:
        value = self.raw(key)
        return decode_json(key, value) if isinstance(value, str) else None

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        return [self.get_json(key) for key in keys]

    def set_json(self, key: str, value: object, *, ttl_s: float | None = None) -> None:
        self.set_raw(key, encode_json(value), ttl_s=ttl_s)

    def delete(self, *keys: str) -> int:
        with self.lock:
            found = [k for k in keys if self.raw(k) is not None]
            for key in found:
                self._data.pop(key, None)
                self._expires.pop(key, None)
            return len(found)

    def incr(self, key: str, *, ttl_s: float) -> int:
        with self.lock:
            value = int(self.raw(key) or 0) + 1
            self.set_raw(key, str(value), ttl_s=ttl_s)
            return value

    def ttl(self, key: str) -> float | None:
        with self.lock:
            if self.raw(key) is None or key not in self._expires:
                return None
            return self._expires[key] - self.clock()

    def _hash(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        if not isinstance(value, dict):
            value = {}
            self.set_raw(key, value)
        return value

    def hincr(self, key: str, increments: Mapping[str, int], *, ttl_s: float | None = None) -> None:
        with self.lock:
            hashed = self._hash(key)
            for field, amount in increments.items():
                hashed[field] = str(int(hashed.get(field, "0")) + amount)
            if ttl_s is not None:
                self.expire(key, ttl_s)

    def hset(self, key: str, mapping: Mapping[str, Scalar]) -> None:
        with self.lock:
            self._hash(key).update({f: str(v) for f, v in mapping.items()})

    def hgetall(self, key: str) -> dict[str, str]:
        value = self.raw(key)
        return dict(value) if isinstance(value, dict) else {}

    def hdel(self, key: str, *fields: str) -> None:
        with self.lock:
            value = self.raw(key)
            if isinstance(value, dict):
                for field in fields:
                    value.pop(field, None)

    def _window(self, key: str) -> dict[str, float]:
        value = self.raw(key)
        if not isinstance(value, dict):
            value = {}
            self.set_raw(key, value)
        return value

    def window_add(self, key: str, member: str, now: float, window_s: float, *, cap: int) -> int:
        with self.lock:
            window = self._window(key)
            window[member] = now
            for old in [m for m, t in window.items() if t <= now - window_s]:
                del window[old]
            while len(window) > cap:
                del window[min(window, key=lambda m: (window[m], m))]
            self.expire(key, window_s)
            return len(window)

    def window_count(self, key: str, now: float, window_s: float) -> int:
        return len(self.window_members(key, now, window_s))

    def window_members(self, key: str, now: float, window_s: float) -> list[tuple[str, float]]:
        value = self.raw(key)
        if not isinstance(value, dict):
            return []
        return sorted(((m, t) for m, t in value.items() if now - window_s < t <= now), key=lambda p: (p[1], p[0]))

    def list_push(self, key: str, value: object, *, cap: int) -> int:
        with self.lock:
            items = self.raw(key)
            if items is not None and not isinstance(items, list):  # like Redis: the foreign value is set aside
                self.set_raw(f"{key}:corrupt:{int(self.clock() * 1000)}", items)
                items = None
            if items is None:
                items = []
                self.set_raw(key, items)
            items.append(encode_json(value))
            del items[: max(0, len(items) - cap)]
            return len(items)

    def list_range(self, key: str, start: int = 0, stop: int = -1) -> list[Any]:
        items = self.raw(key)
        if not isinstance(items, list):
            return []
        end = None if stop == -1 else stop + 1
        decoded = [decode_json(key, item) for item in items[start:end]]
        return [d for d in decoded if d is not None]

    def list_len(self, key: str) -> int:
        items = self.raw(key)
        return len(items) if isinstance(items, list) else 0

    def stream_add(self, key: str, fields: Mapping[str, str], *, maxlen: int) -> None:
        with self.lock:
            entries = self.raw(key)
            if not isinstance(entries, list):
                entries = []
                self.set_raw(key, entries)
            entries.append((f"{int(self.clock() * 1000)}-{next(self._stream_ids)}", dict(fields)))
            del entries[: max(0, len(entries) - maxlen)]

    def stream_range(self, key: str, count: int) -> list[StreamEntry]:
        entries = self.raw(key)
        if not isinstance(entries, list):
            return []
        return list(entries[-count:]) if count > 0 else []

    def scan(self, pattern: str) -> list[str]:
        with self.lock:
            return sorted(k for k in list(self._data) if self.raw(k) is not None and fnmatch.fnmatchcase(k, pattern))

    def close(self) -> None:
        """Nothing to release."""

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Scalar]) -> Any:
        with self.lock:
            return script.python(self, keys, args)

    def run_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        with self.lock:
            return [call.script.python(self, call.keys, call.args) for call in calls]
