"""Shared fixtures: real Redis on 127.0.0.1 (skipped locally when absent, failing under CI)."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from prismatic_celery.store import MemoryStore, RedisStore, Store
from prismatic_celery.store.keys import Keys
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


_ports_given: set[int] = set()


#: Where the test servers' ports come from: below the kernel's ephemeral range (32768 and up here), so no outgoing
#: connection's local port and no port another process got by binding port 0 (the benchmarks' servers) can take
#: it, even while a test has stopped its server to restart it on the same port. A cluster's bus ports (port +
#: 10000) stay below that range too.
PORT_RANGE = (12000, 22700)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, never the same twice in this process."""
    rng = random.Random()
    while True:
        port = rng.randrange(*PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((REDIS_HOST, port))
            except OSError:  # in use
                continue
        _ports_given.add(port)
        return port


class RedisServer:
    """A private ``redis-server`` on its own port, started and stopped by the test.

    ``args`` are appended to its command line (cluster or replica options). ``sentinel`` is the
    configuration of a Sentinel instead (``redis-server <file> --sentinel``: Sentinel rewrites it).
    ``tls``: it also listens with TLS on :attr:`tls_port`, its certificate (self-signed for 127.0.0.1,
    made with ``openssl``) in :attr:`ca_file`.
    """

    def __init__(self, *args: str, sentinel: str | None = None, tls: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="prismatic-redis-")
        self.args = args
        self.sentinel = sentinel
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> str:
        return str(Path(self.dir, "cert.pem"))

    def _tls_args(self) -> list[str]:
        if self.tls_port is None:
            return []
        key = str(Path(self.dir, "key.pem"))
        if not Path(self.ca_file).exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", self.ca_file, "-days", "1", "-subj", f"/CN={REDIS_HOST}",
                            "-addext", f"subjectAltName=IP:{REDIS_HOST}"], check=True, capture_output=True, timeout=30)
        return ["--tls-port", str(self.tls_port), "--tls-cert-file", self.ca_file, "--tls-key-file", key,
                "--tls-ca-cert-file", self.ca_file, "--tls-auth-clients", "no"]

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{REDIS_HOST}:{self.port}"

    def client(self, **options: Any) -> redis.Redis:
        """A plain client of this server (decoded answers, short timeouts)."""
        return redis.Redis(host=REDIS_HOST, port=self.port, decode_responses=True, socket_timeout=5, **options)

    def _command(self) -> list[str]:
        if self.sentinel is None:
            return ["redis-server", "--port", str(self.port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no",
                    "--dir", self.dir, *self._tls_args(), *self.args]
        config = Path(self.dir, "sentinel.conf")
        if not config.exists():
            config.write_text(self.sentinel, encoding="utf-8")
        return ["redis-server", str(config), "--sentinel", "--port", str(self.port), "--bind", REDIS_HOST,
                "--dir", self.dir, *self.args]

    def start(self) -> None:
        self.proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: redis_answers(self.port), timeout_s=10, message=f"redis-server on {self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A second, private Redis server (for outage tests that must leave the broker up)."""
    _require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.remove()


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    try:
        return dict(client.info(section))
    except redis.RedisError:
        return {}


class ClusterServers:
    """A Redis Cluster of ``size`` masters and no replicas on free ports (``redis-cli --cluster create``)."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000")
                      for _ in range(size)]

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming two of the nodes (any one is enough to find the others)."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes[:2])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        created = subprocess.run(["redis-cli", "--cluster", "create", *(n.address for n in self.nodes),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=30)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        clients = [node.client() for node in self.nodes]
        for client in clients:
            wait_for(lambda c=client: _cluster_ok(c), timeout_s=20, message="cluster_state:ok on every node")
            client.close()

    def flush(self) -> None:
        """Empty every node (this cluster is the test session's own)."""
        for node in self.nodes:
            client = node.client()
            client.flushall()
            client.close()

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()


def _cluster_ok(client: redis.Redis) -> bool:
    try:
        info = client.execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return False
    return "cluster_state:ok" in str(info)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A 3-master Redis Cluster for the whole session (each test uses its own namespace, hence its own slot)."""
    _require(all(shutil.which(b) for b in ("redis-server", "redis-cli")), "redis-server or redis-cli is not installed")
    cluster = ClusterServers()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


SENTINEL_MASTER = "prismatic-store"


class SentinelServers:
    """A master, its replica and one Sentinel watching them (quorum 1, so a failover needs no peer)."""

    def __init__(self, master_name: str = SENTINEL_MASTER) -> None:
        self.master_name = master_name
        self._asker: redis.Redis | None = None
        self.master = RedisServer("--repl-diskless-sync-delay", "0")
        self.replica = RedisServer("--replicaof", REDIS_HOST, str(self.master.port))
        self.sentinel = RedisServer(sentinel="\n".join([
            f"sentinel monitor {master_name} {REDIS_HOST} {self.master.port} 1",
            f"sentinel down-after-milliseconds {master_name} 2000",
            f"sentinel failover-timeout {master_name} 10000",
            "",
        ]))

    @property
    def url(self) -> str:
        return f"sentinel://{self.sentinel.address}"

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        replica = self.replica.client()
        wait_for(lambda: _info(replica, "replication").get("master_link_status") == "up", timeout_s=20,
                 message="the replica in sync with its master")
        replica.close()
        self.sentinel.start()
        wait_for(self._replica_known, timeout_s=20, message="the sentinel knowing the replica")

    def _replica_known(self) -> bool:
        try:
            replicas = self.sentinel.client().execute_command("SENTINEL", "REPLICAS", self.master_name)
        except redis.RedisError:
            return False
        return any("disconnected" not in str(r) and "s_down" not in str(r) for r in replicas)

    def master_port(self) -> int:
        """The port of the master the Sentinel names now."""
        if self._asker is None:
            self._asker = self.sentinel.client()
        host_port = self._asker.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(host_port[1])

    def remove(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.remove()


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelServers]:
    """A master, a replica and a Sentinel, stopped however the test ends."""
    _require(shutil.which("redis-server") is not None, "redis-server is not installed")
    servers = SentinelServers()
    try:
        servers.start()
        yield servers
    finally:
        servers.remove()


@pytest.fixture(params=["memory", "fakeredis", "redis", "cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """One contract, four backends: the memory twin, fakeredis, a real Redis and a real 3-master Redis Cluster."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "fakeredis":
        yield RedisStore("redis://fake", client=fakeredis.FakeRedis(decode_responses=True, encoding_errors="replace"))
    else:
        if request.param == "cluster":
            cluster: ClusterServers = request.getfixturevalue("redis_cluster")
            cluster.flush()
            url = cluster.url
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
    entries = client.xrange(Keys(namespace).key("events"))
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
