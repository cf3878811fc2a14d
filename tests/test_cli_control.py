"""Remote control commands: inspect supervision_health, control supervision_pause / supervision_resume."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.worker.control import Panel

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.runtime import Runtime
from prismatic_celery.store import MemoryStore
from prismatic_celery.supervision.pauses import read_pauses
from prismatic_celery.testing import serve
from prismatic_celery.worker.control import supervision_health, supervision_pause, supervision_resume
from prismatic_celery.worker.state import ensure_worker_state, worker_state

DOMAINS = {"core": {"strategy": "rest_for_one", "children": ["storage", "cache", "telemetry"]}}


class FakeReconciler:
    """Records what the control commands ask of the worker's reconciler."""

    def __init__(self) -> None:
        self.paused: list[list[str]] = []
        self.served_pids: dict[str, set[int]] = {"core": {os.getpid()}}
        self.wake = SimpleNamespace(set=lambda: self.paused.append(["<wake>"]))

    def pause_now(self, consumer: Any, queues: list[str]) -> None:
        self.paused.append(list(queues))


def _reconciler(runtime: Runtime) -> Any:
    state = worker_state(runtime.app)
    assert state is not None
    return state.reconciler


@pytest.fixture
def worker() -> Iterator[tuple[Any, Runtime]]:
    app = Celery("ctl", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_store_url="memory://", prismatic_cooldown_max_s=120)
    prismatic_celery.install(app, store=MemoryStore())
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    serve(runtime, "w1@test")
    ensure_worker_state(app).reconciler = FakeReconciler()  # type: ignore[assignment]
    broadcasts: list[dict[str, Any]] = []
    runtime.broadcast_reconcile = lambda *, pause: broadcasts.append({"pause": pause})  # type: ignore[method-assign]
    runtime.broadcasts = broadcasts  # type: ignore[attr-defined]
    consumer = SimpleNamespace(app=app, hostname="w1@test", pool=SimpleNamespace(info={"processes": [os.getpid()]}))
    yield SimpleNamespace(consumer=consumer), runtime


def test_the_commands_are_registered_with_their_types() -> None:
    """One inspect and three control commands, with the signatures `celery control --list` shows."""
    assert Panel.meta["supervision_health"].type == "inspect"
    assert Panel.meta["supervision_pause"].type == "control"
    assert [name for name, _ in Panel.meta["supervision_pause"].args] == ["target", "duration_s"]
    assert [name for name, _ in Panel.meta["supervision_resume"].args] == ["target"]
    (_, target), (_, seconds) = Panel.meta["supervision_pause"].args
    assert target("cache") == "cache" and seconds("2.5") == 2.5  # outside a command line: values pass
    assert Panel.meta["supervision_reconcile"].type == "control"


def test_pause_writes_a_manual_record_stops_consuming_here_and_broadcasts(worker: tuple[Any, Runtime]) -> None:
    """A domain pause covers its queues, defaults to prismatic_cooldown_max_s, and tells every worker."""
    state, runtime = worker
    reply = supervision_pause(state, target="core")
    assert reply == {"ok": "paused storage,cache,telemetry of core"}
    pauses = read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["storage", "cache", "telemetry"])
    assert {p.reason for p in pauses.values()} == {"manual"}
    assert all(119 < p.until - p.since <= 120 for p in pauses.values())
    assert pauses["cache"].by == "operator via w1@test"
    assert _reconciler(runtime).paused == [["storage", "cache", "telemetry"]]
    assert runtime.broadcasts == [{"pause": ["storage", "cache", "telemetry"]}]  # type: ignore[attr-defined]


def test_resume_clears_the_pause_and_wakes_the_reconciler(worker: tuple[Any, Runtime]) -> None:
    """Resume of a queue ends its pause only."""
    state, runtime = worker
    supervision_pause(state, target="cache", duration_s=30.0)
    supervision_pause(state, target="telemetry", duration_s=30.0)
    assert supervision_resume(state, target="cache") == {"ok": "resumed cache of core (1 pause(s) ended)"}
    assert set(read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["cache", "telemetry"])) == {"telemetry"}
    assert ["<wake>"] in _reconciler(runtime).paused


def test_unknown_targets_and_bad_durations_are_errors_not_crashes(worker: tuple[Any, Runtime]) -> None:
    """The control loop gets an error reply."""
    state, _ = worker
    assert "neither a domain nor a supervised queue" in supervision_pause(state, target="nope")["error"]
    assert "must be > 0" in supervision_pause(state, target="cache", duration_s=0.0)["error"]
    assert "neither a domain nor a supervised queue" in supervision_resume(state, target="nope")["error"]


def test_inspect_health_is_this_workers_compact_view(worker: tuple[Any, Runtime]) -> None:
    """The worker's reply is its own view: processes, memory, the tree's numbers; not the cluster report."""
    state, _ = worker
    supervision_pause(state, target="telemetry", duration_s=30.0)
    reply = supervision_health(state)
    assert reply["scope"] == "worker" and reply["hostname"] == "w1@test"
    assert reply["processes"] == [os.getpid()] and reply["total_processes"] == 1 and reply["rss_bytes"] > 0
    assert reply["paused"] == [{"child": "telemetry", "reason": "manual"}] and reply["score"] == 95
    assert reply["state"] == "healthy" and reply["escalated"] == [] and reply["hotspots"] == []
    assert "domains" not in reply and "workers" not in reply, "the cluster's report is `supervision health`"
    assert len(json.dumps(reply, indent=2).splitlines()) <= 40


def test_commands_on_a_worker_without_the_plugin_reply_with_an_error() -> None:
    """A worker of an app without prismatic answers instead of failing."""
    plain = Celery("plain", broker="memory://", set_as_current=False)
    state = SimpleNamespace(consumer=SimpleNamespace(app=plain, hostname="x"))
    for command in (supervision_health, supervision_pause, supervision_resume):
        assert "error" in command(state)
