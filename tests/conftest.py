"""Shared fixtures: real Redis on 127.0.0.1 (skipped locally when absent, failing under CI)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from prismatic_celery.store import MemoryStore, RedisStore, Store
from prismatic_celery.testing import wait_for
from tests.background import Background

REDIS_HOST = "127.0.0.1"
REDIS_PORT = int(os.environ.get("PRISMATIC_TEST_REDIS_PORT", "6379"))
IN_CI = bool(os.environ.get("CI"))


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: integration tests must run)")
    pytest.skip(reason)


def redis_answers(port: int = REDIS_PORT) -> bool:
    try:
        return bool(redis.Redis(host=REDIS_HOST, port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def real_redis() -> str:
    """The base URL of the real Redis server (``redis://127.0.0.1:6379``)."""
    _require(redis_answers(), f"no Redis answering at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


_dbs = itertools.cycle(range(1, 16))


def _lease_db(real_redis: str) -> tuple[int, str]:
    """Lease one of databases 1-15 (a key in db 0 with a TTL), so concurrent test runs never share one."""
    lock = redis.Redis.from_url(f"{real_redis}/0")
    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    for _ in range(15 * 40):
        db = next(_dbs)
        if lock.set(f"prismatic-tests:db-lease:{db}", token, nx=True, ex=600):
            lock.close()
            return db, token
        time.sleep(0.05 if _ % 15 else 0.5)
    raise RuntimeError("no free test database on the real Redis (15 leased)")


@contextlib.contextmanager
def leased_db(real_redis: str) -> Iterator[str]:
    """A flushed database of the real Redis, leased while the block runs (then flushed and released)."""
    db, token = _lease_db(real_redis)
    client = redis.Redis.from_url(f"{real_redis}/{db}")
    client.flushdb()
    try:
        yield f"{real_redis}/{db}"
    finally:
        client.flushdb()
        client.close()
        lock = redis.Redis.from_url(f"{real_redis}/0")
        if lock.get(f"prismatic-tests:db-lease:{db}") == token.encode():
            lock.delete(f"prismatic-tests:db-lease:{db}")
        lock.close()


@pytest.fixture
def redis_url(real_redis: str) -> Iterator[str]:
    """A flushed database of the real Redis, leased to this test while it runs."""
    with leased_db(real_redis) as url:
        yield url


@pytest.fixture(scope="session")
def background(request: pytest.FixtureRequest) -> Iterator[Background]:
    """The registered subprocess runs of the selected tests (tests/background.py), started together the first
    time a test asks for one."""
    with contextlib.ExitStack() as stack:
        runs = Background(stack)
        try:
            runs.launch({item.nodeid for item in request.session.items})
            yield runs
        finally:
            runs.stop()


@pytest.fixture
def namespace() -> str:
    """A key namespace unique to this test."""
    return f"t{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((REDIS_HOST, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on its own port, started and stopped by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="prismatic-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_answers(self.port), timeout_s=10, message=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A second, private Redis server (for outage tests that must leave the broker up)."""
    _require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """One contract, three backends: the memory twin, fakeredis and a real Redis."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "fakeredis":
        yield RedisStore("redis://fake", client=fakeredis.FakeRedis(decode_responses=True, encoding_errors="replace"))
    else:
        url = request.getfixturevalue("redis_url")
        real = RedisStore(url)
        yield real
        real.close()


MESSAGE_EVENTS = ("remediation", "dead_letter", "crash")


def failure_events(client: redis.Redis, namespace: str, child: str | None = None,
                   exception: str | None = None) -> list[dict[str, str]]:
    """The stream entries recording failed executions (one per failure: remediation, dead letter or crash),
    of ``child`` and ``exception`` when given; oldest first."""
    entries = client.xrange(f"prismatic:{namespace}:events")
    found = []
    for _, fields in entries:
        decoded = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in fields.items()}
        if decoded.get("type") not in MESSAGE_EVENTS or decoded.get("outcome") == "normal_exit":
            continue
        if child is not None and decoded.get("child") != child:
            continue
        if exception is not None and decoded.get("exception") != exception:
            continue
        found.append(decoded)
    return found
