"""Helpers shared by the benchmarks: private ``redis-server`` processes on free ports of 127.0.0.1,
a per-process Redis client for the tasks' own bookkeeping, and the repository root.

Nothing here talks to anything but 127.0.0.1, and no benchmark touches a Redis it did not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
from celery import Celery

from prismatic_celery.testing import WorkerProcess, wait_for

__all__ = ["HOST", "ROOT", "check_alive", "free_port", "marks_client", "pythonpath", "redis_server", "start_all"]

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

_marks_client: dict[int, redis.Redis] = {}


def marks_client(url: str) -> redis.Redis:
    """One client per process (pool children are forked: never share the parent's socket)."""
    pid = os.getpid()
    client = _marks_client.get(pid)
    if client is None:
        client = _marks_client[pid] = redis.Redis.from_url(url)
    return client


def pythonpath() -> str:
    """``PYTHONPATH`` for worker subprocesses: the repository root first, then the caller's own."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


# private redis-servers ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(name: str) -> Iterator[int]:
    """A throw-away ``redis-server`` on a free port of 127.0.0.1 (no persistence); yields the port."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix=f"prismatic-bench-{name}-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5)

        def answers() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"redis-server ({name}) exited with {proc.returncode}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(answers, timeout_s=10, message=f"redis-server ({name}) on port {port}")
        client.close()
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


# worker subprocesses -------------------------------------------------------------------------
def start_all(stack: ExitStack, workers: Sequence[WorkerProcess], app: Celery) -> None:
    """Start ``workers`` (each stopped when ``stack`` closes) and wait until every one answers a ping."""
    for worker in workers:
        stack.enter_context(worker)
    for worker in workers:
        worker.wait_ready(app)


def check_alive(workers: Sequence[WorkerProcess], *, skip: Collection[int] = ()) -> None:
    """Stop the benchmark (with the worker's log) when a worker exited; ``skip``: indexes killed on purpose."""
    for index, worker in enumerate(workers):
        if index not in skip and worker.proc is not None and worker.proc.poll() is not None:
            raise SystemExit(f"worker {worker.hostname} exited with {worker.proc.returncode}:\n{worker.log}")
