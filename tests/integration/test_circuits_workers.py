"""Shared circuit breakers on real workers: a dead dependency sees at most fail_max + one trial per reset.

Given 4 pool processes on 2 workers (hostnames) sharing one breaker, when the
dependency is down for 10 s, then the dependency itself counts at most
fail_max + one trial per reset timeout, and once it is back every deferred
task completes exactly once.
"""

from __future__ import annotations

import math
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.integration.conftest import basic_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
DOWN_S = 10.0
FAIL_MAX, RESET_S = 3, 2.0


class Dependency(socketserver.ThreadingTCPServer):
    """A line protocol service on 127.0.0.1 that counts every call and answers ERR while down."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.down = False
        self.calls_while_down = 0
        self.calls = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, Dependency)
        self.rfile.readline()
        with server.lock:
            server.calls += 1
            down = server.down
            if down:
                server.calls_while_down += 1
        self.wfile.write(b"ERR\n" if down else b"OK\n")


@pytest.fixture
def dependency() -> Iterator[Dependency]:
    server = Dependency()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


CONF = {"prismatic_backoff_initial_s": 0.1, "prismatic_backoff_max_s": 0.4, "prismatic_backoff_jitter_s": 0.05,
        "prismatic_domain_budget": {"max_restarts": 1000, "period_s": 60},
        "prismatic_max_restarts_per_message": 50}



def test_a_dead_dependency_sees_at_most_fail_max_plus_one_trial_per_reset(
    redis_url: str, namespace: str, dependency: Dependency
) -> None:
    """20 tasks against a dependency down for 10 s: bounded calls, then all 20 complete once."""
    app = make_app(redis_url, namespace, **CONF)
    env = basic_env(redis_url, namespace, CONF)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    hosts = [f"c1-{namespace}@host-a", f"c2-{namespace}@host-b"]
    with WorkerProcess("tests.apps.basic", hostname=hosts[0], pool="prefork", concurrency=2, env=env,
                       cwd=ROOT) as w1, \
            WorkerProcess("tests.apps.basic", hostname=hosts[1], pool="prefork", concurrency=2, env=env,
                          cwd=ROOT) as w2:
        w1.wait_ready(app)
        w2.wait_ready(app)
        dependency.down = True
        started = time.monotonic()
        results = [app.tasks["basic.call_dep"].apply_async((dependency.port, f"k{i}"), queue="storage")
                   for i in range(20)]
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - started)))  # the outage itself is the scenario
        dependency.down = False
        down_calls = dependency.calls_while_down
        print(f"calls that reached the dead dependency: {down_calls} (20 tasks, 4 processes, 2 workers)")
        assert [r.get(timeout=60) for r in results] == [f"k{i}" for i in range(20)]
        bound = FAIL_MAX + math.ceil(DOWN_S / RESET_S) + 1
        assert down_calls <= bound, f"{down_calls} calls reached the dead dependency (bound {bound})"
        assert down_calls >= FAIL_MAX, "the dependency really was called until the circuit opened"
        wait_for(lambda: all(client.get(f"runs:k{i}") == "1" for i in range(20)), timeout_s=10,
                 message="each task ran once")
        assert dependency.calls - down_calls == 20, "after the outage each task called exactly once"
        assert "supervision-deferred" in w1.log + w2.log
    client.close()
