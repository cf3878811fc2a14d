"""Supervision stores: the interface, its in-process twin and the Redis implementation."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Script, Store, decode_json, encode_json
from .memory import MemoryStore
from .redis import STORE_ERRORS, RedisStore

__all__ = [
    "STORE_ERRORS", "MemoryStore", "RedisStore", "Script", "Store", "decode_json", "encode_json", "open_store",
]


def open_store(
    url: str, *, timeout_s: float = 0.5, retry_s: float = 1.0, transport_options: Mapping[str, object] | None = None,
    home_key: str | None = None,
) -> Store:
    """A store for ``url``: ``memory://`` is the in-process twin, anything else Redis (see :mod:`.urls`)."""
    if url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, timeout_s=timeout_s, retry_s=retry_s, transport_options=transport_options,
                      home_key=home_key)
