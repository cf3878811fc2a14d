"""Test doubles and helpers shipped for users' own tests (and used by ours).

* :func:`wait_for` polls a condition instead of sleeping a guessed time.
* :class:`WorkerProcess` runs a real ``celery worker`` in a subprocess and
  stops it, however the test ends.
* :func:`fail_child` records one child failure (a restart: strategy, budgets,
  events) as if the child's executions had failed at its failure rate.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from celery import Celery

if TYPE_CHECKING:
    from .runtime import Runtime
    from .supervision.restarts import RestartOutcome

__all__ = ["WorkerProcess", "fail_child", "serve", "wait_for"]

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], *, timeout_s: float = 15.0, interval_s: float = 0.05, message: str = "condition"
) -> T:
    """Return the first truthy result of ``predicate``; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message} (last value: {last!r})")
        time.sleep(interval_s)
        last = predicate()
    return last


class WorkerProcess:
    """A real ``celery -A <app> worker`` subprocess.

    ``pool`` is ``prefork``, ``solo`` or ``threads``. The worker's output goes
    to a temporary log file, readable as :attr:`log` (also after it exits), removed with the object.
    """

    def __init__(
        self,
        app_module: str,
        *,
        hostname: str,
        pool: str = "prefork",
        concurrency: int = 2,
        queues: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.hostname = hostname
        self.cmd = [
            sys.executable, "-m", "celery", "-A", app_module, "worker",
            "-P", pool, "-c", str(concurrency), "-n", hostname, "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        if queues:
            self.cmd += ["-Q", ",".join(queues)]
        self.cmd += list(extra_args)
        self.env = {**os.environ, **(env or {})}
        self.cwd = str(cwd) if cwd else None
        self._log = tempfile.NamedTemporaryFile(prefix="prismatic-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        """Everything the worker printed so far."""
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def start(self) -> WorkerProcess:
        """Start the subprocess (returns at once; see :meth:`wait_ready`)."""
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            start_new_session=True,
        )
        return self

    def wait_ready(self, app: Celery, *, timeout_s: float = 30.0) -> None:
        """Block until the worker answers a control ``ping`` (or fail with its log)."""

        def answered() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.hostname} exited with {self.proc.returncode}:\n{self.log}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5)
            return bool(replies)

        try:
            wait_for(answered, timeout_s=timeout_s, interval_s=0.2, message=f"worker {self.hostname} to answer ping")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.log}") from None

    def stop(self, *, timeout_s: float = 15.0) -> int | None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole process group if needed.

        A worker still running after ``timeout_s`` is first sent SIGUSR1, on which Celery
        writes every thread's stack to its log, so :attr:`log` shows where it hung.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR1)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the worker and its pool children."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to report to
            self.kill()
        with contextlib.suppress(Exception):  # the log goes with the only object that can read it
            self._log.close()
            os.unlink(self._log.name)

    def pool_pids(self) -> list[int]:
        """Pids of the worker's pool children (prefork), read from /proc."""
        if self.proc is None:
            return []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def __repr__(self) -> str:
        return f"WorkerProcess({self.hostname!r}, pid={getattr(self.proc, 'pid', None)})"

    def info(self) -> dict[str, object]:
        """Hostname, pid and exit code (for assertion messages)."""
        return {"hostname": self.hostname, "pid": getattr(self.proc, "pid", None),
                "returncode": None if self.proc is None else self.proc.poll()}


def fail_child(runtime: Runtime, queue: str, member: str = "test:0") -> RestartOutcome:
    """Record one failure of the child ``queue`` that trips it (a restart), whatever its window holds.

    The restart is counted and the domain's strategy, budget and escalation act exactly as when
    the child's executions fail at ``prismatic_child_failure_rate``; ``member`` names the failure.
    """
    import dataclasses

    from .supervision.restarts import failure_call, record_failure

    located = runtime.supervisor.locate(queue)
    if located is None:
        raise ValueError(f"{queue!r} is not a supervised queue")
    domain, child = located
    policy = dataclasses.replace(runtime.engine.policy(domain), min_executions=1, failure_rate=0.0)
    call = failure_call(runtime.keys, runtime.supervisor, domain, child, member, policy,
                        context={"task": "test", "task_id": member})
    return record_failure(runtime.store, call, domain)


def serve(runtime: Runtime, hostname: str = "test@localhost", queues: Sequence[str] | None = None,
          **fields: object) -> dict[str, object]:
    """Register a live worker consuming ``queues`` (default: every supervised queue), as a worker's heartbeat
    does, so health counts those children as served; ``fields`` add to the registration. Returns it."""
    from .observability.workers import register_worker

    registration = {"hostname": hostname, "pid": os.getpid(), "pool": "solo", "concurrency": 1, "domains": [],
                    "queues": sorted(runtime.supervisor.queues if queues is None else queues), **fields}
    register_worker(runtime.store, runtime.keys, runtime.settings, registration)
    return registration
