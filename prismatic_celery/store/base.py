"""The store interface: the operations the plugin needs, each one round trip on Redis.

Values are JSON strings or hash fields, never pickle. Implementations:
:class:`~prismatic_celery.store.memory.MemoryStore` (the in-process twin) and
:class:`~prismatic_celery.store.redis.RedisStore` (which falls back to a
MemoryStore whenever Redis fails).
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..log import get_logger, log_event

__all__ = ["OutageWatch", "Script", "ScriptCall", "Store", "StreamEntry", "Twin", "decode_json", "encode_json",
           "safe_url"]

_USERINFO = re.compile(r"://([^@/;]*)@")


def safe_url(url: str) -> str:
    """``url`` with every password masked (``redis://user:***@host``), in each ``;``-separated part."""

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match.group(1).partition(":")
        return f"://{user}:***@" if colon else "://***@"

    return _USERINFO.sub(mask, url)

logger = get_logger("store")

Scalar = str | int | float
StreamEntry = tuple[str, dict[str, str]]
#: A script's Python twin, called as ``twin(memory_store, keys, args)`` under the
#: :class:`~prismatic_celery.store.memory.MemoryStore`'s lock (that module builds on this one, so the
#: store's type is not named here: each twin's own signature names it).
Twin = Callable[..., object]


def encode_json(value: object) -> str:
    """Serialise to compact JSON (the only value format the store writes)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def decode_json(key: str, raw: str | bytes | None) -> Any:
    """Parse JSON read from ``key``; corrupt data is skipped with a warning (None)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        log_event(logging.WARNING, "store-corrupt-value", logger, key=key, error=str(exc)[:200])
        return None


@dataclass(frozen=True)
class Script:
    """An atomic operation: Lua for Redis and its Python twin for the memory store.

    Keys are always passed as ``KEYS`` (never built inside the script), so the
    script runs on a cluster and reads only what it declares.
    """

    name: str
    lua: str
    python: Twin

    @classmethod
    def from_file(
        cls, path: Path, python: Twin, *, prelude: Sequence[Path] = (),
    ) -> Script:
        """Load the Lua source kept beside the code (``prelude`` files first: shared Lua functions)."""
        parts = [p.read_text(encoding="utf-8") for p in (*prelude, path)]
        return cls(name=path.stem, lua="\n".join(parts), python=python)


@dataclass(frozen=True)
class ScriptCall:
    """One script to run with its keys and arguments (see :meth:`Store.run_many`)."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Scalar]


class Store(ABC):
    """What the plugin asks of its store. Never raises for an outage."""

    #: True while the store answers from in-process memory because its server is unreachable.
    degraded: bool = False
    #: Outages so far (each time the server stopped answering): a change means the server may have lost what was
    #: written before (a restart without persistence).
    failures: int = 0
    #: Whether every worker and CLI shares this store (a server), or it lives in this process only.
    shared: bool = True
    #: The store's URL with any password masked (for logs, the CLI and health reports).
    display_url: str = ""

    @abstractmethod
    def ping(self) -> bool:
        """True when the backing server answers."""

    @abstractmethod
    def time(self) -> float:
        """The store's clock in seconds (Redis ``TIME``): one clock for every host."""

    # JSON values -------------------------------------------------------------
    @abstractmethod
    def get_json(self, key: str) -> Any:
        """The JSON value at ``key``; None when absent or corrupt."""

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The JSON values at ``keys`` in one round trip (None where absent or corrupt)."""

    @abstractmethod
    def set_json(self, key: str, value: object, *, ttl_s: float | None = None) -> None:
        """Store ``value`` as JSON, expiring after ``ttl_s`` seconds when given."""

    @abstractmethod
    def delete(self, *keys: str) -> int:
        """Delete keys; the number that existed."""

    @abstractmethod
    def incr(self, key: str, *, ttl_s: float) -> int:
        """Add one to a counter that expires ``ttl_s`` after its last increment; the new value."""

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; None when absent or persistent."""

    # hashes ------------------------------------------------------------------
    @abstractmethod
    def hincr(self, key: str, increments: Mapping[str, int], *, ttl_s: float | None = None) -> None:
        """Add each increment to its hash field (one round trip)."""

    @abstractmethod
    def hset(self, key: str, mapping: Mapping[str, Scalar]) -> None:
        """Set hash fields."""

    @abstractmethod
    def hgetall(self, key: str) -> dict[str, str]:
        """Every field of a hash (empty when absent)."""

    @abstractmethod
    def hdel(self, key: str, *fields: str) -> None:
        """Remove hash fields."""

    # sliding windows (sorted sets scored by time) ----------------------------
    @abstractmethod
    def window_add(self, key: str, member: str, now: float, window_s: float, *, cap: int) -> int:
        """Add ``member`` at ``now``, drop entries older than the window, keep at most ``cap``.

        Returns how many entries remain in the window. The key expires with the window.
        """

    @abstractmethod
    def window_count(self, key: str, now: float, window_s: float) -> int:
        """Entries of the window ending at ``now``."""

    @abstractmethod
    def window_members(self, key: str, now: float, window_s: float) -> list[tuple[str, float]]:
        """``(member, time)`` pairs of the window, oldest first."""

    # capped lists --------------------------------------------------------------
    @abstractmethod
    def list_push(self, key: str, value: object, *, cap: int) -> int:
        """Append a JSON value, dropping the oldest beyond ``cap``; the new length."""

    @abstractmethod
    def list_range(self, key: str, start: int = 0, stop: int = -1) -> list[Any]:
        """Decoded values (corrupt entries skipped with a warning)."""

    @abstractmethod
    def list_len(self, key: str) -> int:
        """Length of a list (0 when absent)."""

    # streams -------------------------------------------------------------------
    @abstractmethod
    def stream_add(self, key: str, fields: Mapping[str, str], *, maxlen: int) -> None:
        """Append an entry to a capped stream."""

    @abstractmethod
    def stream_range(self, key: str, count: int) -> list[StreamEntry]:
        """The newest ``count`` entries, oldest first."""

    # keys and scripts ----------------------------------------------------------
    @abstractmethod
    def scan(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern (SCAN, never KEYS)."""

    @abstractmethod
    def run(self, script: Script, keys: Sequence[str], args: Sequence[Scalar]) -> Any:
        """Run an atomic script: Lua on Redis, its Python twin in memory."""

    @abstractmethod
    def run_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run several scripts in one round trip (pipelined on Redis), in order; their results.

        Each script is atomic; the batch is not (another client may run between two of them).
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class OutageWatch:
    """Whether ``store`` had an outage since the last write this watch saw reach it: a server back from an outage
    may have restarted empty, without what was written before (registrations, keys' expiries)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen = store.failures

    def since(self) -> bool:
        """An outage happened, or the last write did not reach the server."""
        return self.store.failures != self._seen

    def wrote(self) -> None:
        """A write was just made: it reached the server unless the store is degraded (then :meth:`since` stays
        True until one does)."""
        self._seen = -1 if self.store.degraded else self.store.failures
