"""Fixtures for the circuit breaker tests (self-contained: no reliance on conftest.py).

``circuit_env`` runs one test body on the memory twin (injected clock), fakeredis (Lua via
lupa) and the real Redis on 127.0.0.1:6379 (skipped when absent, failing when ``CI`` is set),
each in a namespace unique to the test whose keys are deleted afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from prismatic_celery.circuits import Circuits, CircuitSpec
from prismatic_celery.observability.events import Dispatcher, SupervisionEvent, SupervisionListener
from prismatic_celery.store import MemoryStore, RedisStore, Store
from prismatic_celery.store.keys import Keys

REDIS_URL = "redis://127.0.0.1:6379/0"
IN_CI = bool(os.environ.get("CI"))


# A store command slower than the store's timeout (0.5 s by default) is a store outage to a breaker, which then
# runs on its own copy of the record. On a loaded 2-core machine a reply can take that long, so tests of the
# healthy store give it a generous timeout; the outage tests stop the server (connections are refused at once).
HEALTHY_TIMEOUT_S = 10.0


def require_redis() -> str:
    """The real Redis URL; skip the test when it does not answer (fail instead under CI)."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"no Redis at {REDIS_URL} ({exc}) and CI is set: these tests must run")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


def delete_namespace(url: str, namespace: str) -> None:
    """Delete every key of ``namespace`` on the real Redis."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=Keys(namespace).pattern(), count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 3.0, message: str = "condition") -> Any:
    """Poll ``predicate`` every 5 ms until truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(0.005)


class FakeClock:
    """A settable clock: ``time()`` for the memory store, ``monotonic()`` for the registry cache."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder(SupervisionListener):
    """Keeps every circuit event it receives."""

    def __init__(self) -> None:
        self.events: list[SupervisionEvent] = []

    def on_circuit(self, event: SupervisionEvent) -> None:
        self.events.append(event)

    def transitions(self) -> list[tuple[str, str]]:
        return [(e.fields["old_state"], e.fields["new_state"]) for e in self.events]


class OpCounter:
    """Counts store script runs by op (``read``, ``acquire``, ``failure``...), wrapping ``store.run``."""

    def __init__(self, store: Store) -> None:
        self.ops: list[str] = []
        inner = store.run

        def run(script: Any, keys: Any, args: Any) -> Any:
            self.ops.append(str(args[0]))
            return inner(script, keys, args)

        store.run = run  # type: ignore[method-assign]

    def clear(self) -> None:
        self.ops.clear()


@dataclass
class CircuitEnv:
    """One backend for a test: build stores and registries as separate "processes" would."""

    kind: str
    namespace: str
    make_store: Callable[[], Store]
    clock: FakeClock | None = None
    registries: list[Circuits] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.namespace)

    def circuits(self, *, specs: dict[str, CircuitSpec] | None = None, listeners: tuple[SupervisionListener, ...] = (),
                 store: Store | None = None, **kwargs: Any) -> Circuits:
        """A registry as one process would have it (its own store connection)."""
        if self.clock is not None:
            kwargs.setdefault("monotonic", self.clock.monotonic)
        registry = Circuits(store or self.make_store(), self.keys, Dispatcher(listeners), specs=specs, **kwargs)
        self.registries.append(registry)
        return registry

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: instantly on the injected clock, by sleeping on a real server."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    def close(self) -> None:
        for registry in self.registries:
            registry.stop()


def _fakeredis_factory() -> Callable[[], Store]:
    pytest.importorskip("lupa", reason="fakeredis runs Lua only with lupa installed (pip install lupa)")
    import fakeredis

    server = fakeredis.FakeServer()

    def make() -> Store:
        return RedisStore("redis://fake", client=fakeredis.FakeRedis(server=server, decode_responses=True))

    return make


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def circuit_env(request: pytest.FixtureRequest) -> Iterator[CircuitEnv]:
    """The same test body on the memory twin, fakeredis and the real Redis."""
    namespace = f"tc{uuid.uuid4().hex[:10]}"
    if request.param == "memory":
        clock = FakeClock()
        shared = MemoryStore(clock=clock.time)
        env = CircuitEnv("memory", namespace, lambda: shared, clock=clock)
        yield env
        env.close()
    elif request.param == "fakeredis":
        env = CircuitEnv("fakeredis", namespace, _fakeredis_factory())
        yield env
        env.close()
    else:
        url = require_redis()
        env = CircuitEnv("redis", namespace, lambda: RedisStore(url, timeout_s=HEALTHY_TIMEOUT_S))
        try:
            yield env
        finally:
            env.close()
            delete_namespace(url, namespace)


@pytest.fixture
def redis_namespace() -> Iterator[tuple[str, str]]:
    """``(url, namespace)`` on the real Redis; the namespace's keys are deleted afterwards."""
    url = require_redis()
    namespace = f"tc{uuid.uuid4().hex[:10]}"
    yield url, namespace
    delete_namespace(url, namespace)


class DependencyDown(Exception):
    """The fake dependency answered with an error."""


# a dependency on 127.0.0.1 that is down for a while, and processes hammering it ---------------
@dataclass(frozen=True)
class Hit:
    """One request the flaky server answered: when it started and ended (wall clock), and whether it was down."""

    start: float
    end: float
    down: bool


class FlakyServer:
    """A line-protocol TCP server on 127.0.0.1: answers ``ERR`` until ``down_until``, then ``OK``.

    Records, at the server, every request (:class:`Hit`); a request while down takes ``hold_s``
    before its answer, so calls in flight at the same time overlap visibly.
    """

    def __init__(self, hold_s: float = 0.0) -> None:
        import socketserver
        import threading

        self.down_until = float("inf")
        self.hold_s = hold_s
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if not self.rfile.readline():
                    return
                start = time.time()
                down = time.monotonic() < outer.down_until
                if down and outer.hold_s:
                    time.sleep(outer.hold_s)
                with outer._lock:
                    outer.hits.append(Hit(start, time.time(), down))
                self.wfile.write(b"ERR\n" if down else b"OK\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128  # 16 processes connecting at once: no SYN dropped (a 1-s retry)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def down_hits(self) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.down]

    @property
    def up_hits(self) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if not hit.down]

    def go_down_for(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    def go_up(self) -> None:
        self.down_until = time.monotonic()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ping(port: int) -> None:
    """One request to the flaky server; DependencyDown unless it answers OK."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"PING\n")
        answer = sock.recv(16)
    if answer.strip() != b"OK":
        raise DependencyDown(answer.decode(errors="replace"))


STATE_CODES = ("closed", "open", "half-open")


def hammer(url: str, namespace: str, port: int, spec: dict[str, Any], ready: Any, go: Any, run_s: float,
           results: Any, index: int = 0, views: Any = None, pace_s: float = 0.002, stop: Any = None) -> None:
    """A worker process: call the dependency through the shared breaker "dep" in a loop for ``run_s``.

    Puts ``{"ok", "failed", "refused", "failed_at"}`` on ``results`` (``failed`` counts every call that
    reached the dead dependency, ``failed_at`` when each ended). With ``views`` (a shared array of
    doubles), keeps ``views[2 * index]`` at the state it sees (an index of :data:`STATE_CODES`) and
    ``views[2 * index + 1]`` at that record's ``seq``. ``stop`` (an event) ends the loop early.
    """
    from prismatic_celery.circuits import CircuitOpenError

    circuits = Circuits(RedisStore(url, timeout_s=HEALTHY_TIMEOUT_S), Keys(namespace),
                        specs={"dep": CircuitSpec(**spec)})
    counts: dict[str, Any] = {"ok": 0, "failed": 0, "refused": 0, "failed_at": []}
    try:
        circuits.start(wait_s=5)
        breaker = circuits.get("dep")
        breaker.view()
        ready.put(os.getpid())
        go.wait(30)
        end = time.monotonic() + run_s
        while time.monotonic() < end and not (stop is not None and stop.is_set()):
            try:
                breaker.call(ping, port)
                counts["ok"] += 1
            except (DependencyDown, CircuitOpenError) as exc:
                if isinstance(exc, DependencyDown) or isinstance(exc.__cause__, DependencyDown):
                    counts["failed"] += 1
                    counts["failed_at"].append(time.time())
                else:
                    counts["refused"] += 1
            if views is not None:
                record = breaker.view()[0]
                views[2 * index], views[2 * index + 1] = STATE_CODES.index(record.state), record.seq
            time.sleep(pace_s)
    finally:
        results.put(counts)
        circuits.stop()
