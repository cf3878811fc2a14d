"""A worker's processes and memory: the sample each worker publishes, and how readers find it.

| Key | Holds |
|---|---|
| ``prismatic:{<ns>}:health:<hostname>`` | the worker's latest sample (JSON, expiring) |

A worker counts its main process and its pool processes (solo and threads pools run
tasks in the main process). The memory of a domain is the RSS of the pool processes
that served that domain's tasks (a process that served two domains counts in both).
Workers publish this sample every ``max(5 s, prismatic_reconcile_interval_s)`` so the
cluster view can add them up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from ..log import get_logger, log_event

if TYPE_CHECKING:
    from ..store.keys import Keys

__all__ = ["SampleJson", "WorkerSample", "sample_key_for"]

logger = get_logger("health")


def sample_key_for(keys: Keys, hostname: str) -> str:
    """``prismatic:{<ns>}:health:<hostname>``: a worker's latest sample (JSON, expires)."""
    return keys.key("health", hostname)


class SampleJson(TypedDict):
    """The stored / reported form of a :class:`WorkerSample`."""

    hostname: str
    pid: int
    pool: str | None
    processes: list[int]
    total_processes: int
    memory_per_domain: dict[str, int | None]
    rss_total: int | None
    at: float


def _int(value: object) -> int:
    if isinstance(value, (int, float, str)):
        return int(value)
    raise TypeError(f"not a number: {value!r}")


def _float(value: object) -> float:
    if isinstance(value, (int, float, str)):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


@dataclass(frozen=True)
class WorkerSample:
    """One worker's processes and memory, sampled in its main process."""

    hostname: str
    pid: int
    pool: str | None
    processes: tuple[int, ...]
    """The main process and the pool processes (pids, sorted)."""
    memory_per_domain: dict[str, int | None]
    """RSS in bytes of the live pool processes that served each domain (None: none has yet, or unknown)."""
    rss_total: int | None
    at: float

    def to_json(self) -> SampleJson:
        """The stored / reported form."""
        return {
            "hostname": self.hostname, "pid": self.pid, "pool": self.pool, "processes": list(self.processes),
            "total_processes": len(self.processes), "memory_per_domain": dict(self.memory_per_domain),
            "rss_total": self.rss_total, "at": self.at,
        }

    @classmethod
    def from_json(cls, data: object) -> WorkerSample | None:
        """A stored sample; None (with a warning) when malformed."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not an object")
            memory = data.get("memory_per_domain") or {}
            if not isinstance(memory, Mapping):
                raise TypeError("memory_per_domain is not an object")
            return cls(
                hostname=str(data["hostname"]), pid=_int(data["pid"]),
                pool=None if data.get("pool") is None else str(data["pool"]),
                processes=tuple(_int(p) for p in data.get("processes") or ()),
                memory_per_domain={str(k): None if v is None else _int(v) for k, v in memory.items()},
                rss_total=None if data.get("rss_total") is None else _int(data["rss_total"]),
                at=_float(data.get("at") or 0.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            log_event(logging.WARNING, "health-sample-invalid", logger, error=repr(exc)[:200])
            return None
