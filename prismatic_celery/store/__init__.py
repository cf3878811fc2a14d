"""Supervision stores: the interface, its in-process twin and the Redis implementation."""

from __future__ import annotations

from .base import Script, Store, decode_json, encode_json
from .memory import MemoryStore
from .redis import RedisStore

__all__ = ["MemoryStore", "RedisStore", "Script", "Store", "decode_json", "encode_json", "open_store"]


def open_store(url: str, *, timeout_s: float = 0.5, retry_s: float = 1.0) -> Store:
    """A store for ``url``: ``memory://`` is the in-process twin, anything else Redis."""
    if url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, timeout_s=timeout_s, retry_s=retry_s)
