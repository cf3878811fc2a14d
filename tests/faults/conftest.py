"""Fixtures of the fault-injection suite: a ledger client, a persistent private Redis, worker helpers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner, Result

from prismatic_celery.cli.main import supervision
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.conftest import REDIS_HOST, RedisServer, _require, redis_answers
from tests.faults.apps import make_faults_app

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.apps"


class PersistentRedisServer(RedisServer):
    """A private ``redis-server`` that writes every command to its append-only file before answering
    (``appendfsync always``), in its own temporary directory, so a restart (even SIGKILL) keeps
    everything it acknowledged: the broker of the broker-restart test."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_answers(self.port), timeout_s=10, message=f"redis-server on {self.port}")

    def crash(self) -> None:
        """SIGKILL: no shutdown hook runs, only what the append-only file already holds survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def persistent_redis() -> Iterator[PersistentRedisServer]:
    _require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = PersistentRedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def ledger(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test's flushed database of the real Redis (tasks keep their ledger there)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def faults_env(broker: str, namespace: str, ledger_url: str, store: str | None = None,
               conf: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment a worker of :mod:`tests.faults.apps` reads its configuration from."""
    env = {"FAULTS_BROKER_URL": broker, "FAULTS_NAMESPACE": namespace, "FAULTS_LEDGER_URL": ledger_url,
           "FAULTS_CONF": json.dumps(conf or {}), "PYTHONPATH": str(ROOT)}
    if store:
        env["FAULTS_STORE_URL"] = store
    return env


def worker(namespace: str, env: dict[str, str], *, name: str, pool: str = "prefork", concurrency: int = 2,
           extra_args: tuple[str, ...] = ()) -> WorkerProcess:
    """A real worker of the faults app (not started)."""
    return WorkerProcess(APP, hostname=f"{name}-{namespace}@faults", pool=pool, concurrency=concurrency,
                         extra_args=extra_args, env=env, cwd=ROOT)


def unique(prefix: str = "k") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# Kombu's Redis transport puts back an unacknowledged message (its worker died, or its ack was lost
# with the connection) once it is older than the visibility timeout; by default it checks only every
# 10th call of a 10 s timer, so these tests make it check every second.
VISIBILITY_S = 5
TRANSPORT = {"visibility_timeout": VISIBILITY_S, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}

# Log lines carry the logger name, so the plugin's own lines can be told from Celery's.
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] <%(name)s> %(message)s"
LOG_CONF = {"worker_log_format": LOG_FORMAT, "worker_task_log_format": LOG_FORMAT,
            "worker_redirect_stdouts": False}
_RECORD_START = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+: [A-Z]+/[^\]]*\] <([^>]*)> ")


def log_records(text: str) -> list[tuple[str, str]]:
    """``(logger name, record text)`` pairs of a worker log (continuation lines join their record;
    lines before the first record are attributed to ``-``)."""
    records: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _RECORD_START.match(line)
        if match:
            records.append((match.group(1), line))
        elif records:
            records[-1] = (records[-1][0], records[-1][1] + "\n" + line)
        else:
            records.append(("-", line))
    return records


def plugin_log(text: str) -> str:
    """Only the records written by the plugin's loggers (``prismatic_celery.*``)."""
    return "\n".join(record for name, record in log_records(text) if name.startswith("prismatic_celery"))


def dump_namespace(client: redis.Redis, namespace: str) -> dict[str, str]:
    """Every key of the namespace with its whole value as text (any type), for secret scans."""
    found: dict[str, str] = {}
    for key in client.scan_iter(match=Keys(namespace).pattern(), count=1000):
        found[key] = dump_key(client, key)
    return found


def dump_key(client: redis.Redis, key: str) -> str:
    kind = client.type(key)
    if kind == "string":
        return str(client.get(key))
    if kind == "hash":
        return json.dumps(client.hgetall(key))
    if kind == "list":
        return json.dumps(client.lrange(key, 0, -1))
    if kind == "set":
        return json.dumps(sorted(client.smembers(key)))
    if kind == "zset":
        return json.dumps(client.zrange(key, 0, -1, withscores=True))
    if kind == "stream":
        return json.dumps(client.xrange(key))
    return ""


def pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


# --- the public surfaces: the CLI through click's CliRunner, the runtime API ---------------------------
class Obj:
    """What ``celery -A proj`` puts in click's context object."""

    def __init__(self, app: Celery) -> None:
        self.app = app


def cli(app: Celery, *args: str) -> Result:
    """Run `celery supervision ARGS` for ``app`` in-process."""
    return CliRunner().invoke(supervision, list(args), obj=Obj(app))


def no_crash(result: Result, *codes: int) -> None:
    """The command ended by itself with one of the expected exit codes (never an uncaught exception)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"crashed: {result.exception!r}\n{result.output}") from result.exception
    assert result.exit_code in codes, (result.exit_code, result.output)


def faults_runtime(redis_url: str, namespace: str, **conf: Any) -> tuple[Celery, Runtime]:
    """The faults app on ``redis_url`` (broker, store and ledger) and its runtime, as the test process sees them."""
    app = make_faults_app(redis_url, namespace, redis_url, redis_url, **conf)
    runtime = get_runtime(app)
    assert runtime is not None
    return app, runtime


CLI_READS = (["status"], ["status", "--json"], ["health"], ["health", "--json", "--events", "20"], ["hotspots"],
             ["circuits"], ["lessons"], ["lessons", "--json"], ["events"], ["events", "--json"], ["workers"],
             ["tree"], ["check"], ["dlq", "list", "evo"], ["dlq", "list", "core"], ["dlq", "show", "evo", "x"])


def exercise_readers(app: Celery, runtime: Runtime) -> None:
    """Every reader of the API and the CLI: no exception escapes, every command ends with a defined code."""
    from prismatic_celery.observability.health import get_tree_health

    assert isinstance(get_tree_health(runtime, events=20), dict)
    runtime.dlq.list("evo")
    runtime.dlq.get("evo", "half-entry")
    assert runtime.dlq.replay(app, "evo", "no-such") is None
    assert runtime.learning is not None
    runtime.learning.lessons.all(limit=0)
    assert runtime.learning.lessons.get("deadbeefdeadbeef") is None, "a corrupt lesson reads as absent"
    runtime.learning.lessons.best_remediation("deadbeefdeadbeef")
    runtime.learning.metrics.snapshot()
    runtime.learning.lessons.export()
    runtime.engine.pauses.invalidate()
    assert runtime.engine.pauses.current() == {}, "no garbage pause record pauses a queue"
    runtime.circuits.get("dep").current_state  # noqa: B018 (the read is the test)
    for args in CLI_READS:
        no_crash(cli(app, *args), 0, 1, 2, 3, 4)
