"""A worker's processes and memory: sampled in its main process, published for the cluster view.

The worker's ``HealthSamplerStep`` (a consumer bootstep) starts a :class:`HealthSampler` and stops it: every
``max(5 s, prismatic_reconcile_interval_s)`` it writes this worker's :class:`WorkerSample` to
``prismatic:{<ns>}:health:<hostname>`` (JSON, expiring), from a daemon thread (never the event loop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from ..log import get_logger, log_event
from .samples import WorkerSample, sample_key_for

if TYPE_CHECKING:
    from ..store import Store
    from ..store.keys import Keys
    from ..supervision.tree import Supervisor

__all__ = ["SAMPLE_INTERVAL_S", "HealthSampler", "rss_bytes", "sample_worker", "sum_known"]

logger = get_logger("health")

SAMPLE_INTERVAL_S = 5.0  # processes and memory change slowly: a sample every 5 s is fresh enough
#: The pool processes that served each domain (the reconciler's ``served_pids``), read when sampling.
Served = Callable[[], Mapping[str, Iterable[int]]]


class SampledConsumer(Protocol):
    """What a sample reads of the worker's consumer: its node name and pool."""

    hostname: str
    pool: object


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (``/proc``, else psutil); None when unknown."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]  # optional; no stubs required

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # psutil absent, or the process is gone: unknown
        return None


def _pool_pids(consumer: object) -> list[int]:
    pool = getattr(consumer, "pool", None)
    try:
        info = pool.info if pool is not None else {}
        pids = info.get("processes") if isinstance(info, Mapping) else None
    except Exception:  # a pool that is starting or stopping has no stable info
        pids = None
    return [int(p) for p in pids or () if isinstance(p, int)]


def sum_known(values: Iterable[int | None]) -> int | None:
    """The sum of the known values (None when none is)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _copy(served: Served | None) -> dict[str, tuple[int, ...]]:
    if served is None:
        return {}
    for _ in range(3):  # the event loop may add a pid while we copy: try again
        try:
            return {d: tuple(p) for d, p in list(served().items())}
        except RuntimeError:
            continue
    return {}


def sample_worker(
    supervisor: Supervisor, consumer: SampledConsumer, *, served: Served | None = None, hostname: str | None = None,
    now: float | None = None,
) -> WorkerSample:
    """Sample this worker's processes and the memory of the pool processes serving each domain."""
    main = os.getpid()
    processes = tuple(sorted({main, *_pool_pids(consumer)}))
    rss = {pid: rss_bytes(pid) for pid in processes}
    memory: dict[str, int | None] = {}
    by_domain = _copy(served)
    live = set(processes)
    for domain in supervisor.domain_list:
        pids = [p for p in by_domain.get(domain.name, ()) if p in live]
        memory[domain.name] = sum_known(rss[p] for p in pids) if pids else None
    pool = consumer.pool
    return WorkerSample(
        hostname=hostname or str(consumer.hostname or "unknown"),
        pid=main,
        pool=type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else None,
        processes=processes,
        memory_per_domain=memory,
        rss_total=sum_known(rss.values()),
        at=time.time() if now is None else now,  # a sample's own clock: no store round trip for it
    )


class HealthSampler:
    """Publishes one worker's sample from a daemon thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, store: Store, keys: Keys, supervisor: Supervisor, consumer: SampledConsumer, *,
                 served: Served | None, reconcile_interval_s: float) -> None:
        self.store, self.keys, self.supervisor, self.consumer, self.served = store, keys, supervisor, consumer, served
        self.hostname = str(consumer.hostname)
        self.interval_s = max(SAMPLE_INTERVAL_S, reconcile_interval_s)
        self.ttl_s = max(15.0, 3 * self.interval_s)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start publishing (first sample at once)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="prismatic-health", daemon=True)
            self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                sample = sample_worker(self.supervisor, self.consumer, served=self.served, hostname=self.hostname)
                self.store.set_json(sample_key_for(self.keys, self.hostname), sample.to_json(), ttl_s=self.ttl_s)
            except Exception as exc:  # the sampler never stops the worker; the next period tries again
                log_event(logging.ERROR, "health-sample-failed", logger, error=repr(exc)[:300])
            self.stop_event.wait(self.interval_s)

    def stop(self) -> None:
        """Stop publishing and withdraw the sample."""
        self.stop_event.set()
        with contextlib.suppress(Exception):  # shutting down: the key expires anyway
            self.store.delete(sample_key_for(self.keys, self.hostname))
