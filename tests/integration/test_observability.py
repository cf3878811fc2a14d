"""Observability on a real worker: `celery control` pause/resume, `celery inspect supervision_health`, events.

Given a real prefork worker and a real Redis, when an operator uses the
plugin's remote control and inspect commands, then the worker obeys and
reports its own processes and memory; and every supervision event a live run
produces (Celery event and stream entry) carries only documented fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from prismatic_celery.observability.event_fields import EVENT_FIELDS
from prismatic_celery.observability.health import summary_numbers
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.integration.conftest import basic_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

#: Celery's own event fields, and the extra fields of stream entries written by the restart script.
CELERY_ENVELOPE = {"type", "hostname", "timestamp", "utcoffset", "pid", "clock", "local_received"}
STREAM_ENVELOPE = {"type", "time", "hostname", "domain_restarts", "paused"}


def celery(env: dict[str, str], *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """``celery -A tests.apps.basic ARGS`` as an operator types it."""
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tests.apps.basic", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s)


def _consuming(app: Celery, host: str) -> set[str]:
    replies = app.control.inspect(destination=[host], timeout=1).active_queues() or {}
    return {q["name"] for q in replies.get(host, [])}


def test_control_pause_resume_and_inspect_health_on_a_real_worker(redis_url: str, namespace: str) -> None:
    """`control supervision_pause` stops telemetry everywhere; inspect reports it and the worker's processes."""
    app = make_app(redis_url, namespace)
    env = basic_env(redis_url, namespace, {})
    host = f"obs-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2, env=env, cwd=ROOT) as worker:
        worker.wait_ready(app)
        assert app.tasks["basic.record"].apply_async(("warm",), queue="cache").get(timeout=15) == "warm"

        paused = celery(env, "control", "supervision_pause", "telemetry", "30", "-d", host, "-t", "5")
        assert paused.returncode == 0, paused.stderr
        assert "paused telemetry of core" in paused.stdout
        wait_for(lambda: "telemetry" not in _consuming(app, host), timeout_s=5, message="telemetry paused")

        inspected = celery(env, "inspect", "supervision_health", "--json", "-d", host, "-t", "5")
        assert inspected.returncode == 0, inspected.stderr
        reply = json.loads(inspected.stdout)[host]
        assert reply["scope"] == "worker" and reply["hostname"] == host
        assert worker.proc is not None and worker.proc.pid in reply["processes"]
        assert reply["total_processes"] == 3, "the main process and two pool processes"
        assert reply["memory_per_domain"]["core"] > 1_000_000, "RSS of the pool process that served cache"
        assert [(p["child"], p["reason"]) for p in reply["paused"]] == [("telemetry", "manual")]
        assert "telemetry" not in reply["consuming"] and "cache" in reply["consuming"]
        assert len(inspected.stdout.splitlines()) <= 60, "one worker's compact view, not the cluster's report"

        from_cli = celery(env, "supervision", "health", "--json")
        assert from_cli.returncode == 0, from_cli.stderr
        numbers = summary_numbers(json.loads(from_cli.stdout))
        assert {k: reply[k] for k in ("score", "state", "escalated", "hotspots", "circuits")} == \
            {k: numbers[k] for k in ("score", "state", "escalated", "hotspots", "circuits")}

        bad = celery(env, "control", "supervision_pause", "telemetri", "-d", host, "-t", "5")
        assert bad.returncode == 1 and "'telemetri' is neither a domain nor a supervised queue" in bad.stderr
        assert len((bad.stdout + bad.stderr).strip().splitlines()) == 1, bad.stdout + bad.stderr

        resumed = celery(env, "control", "supervision_resume", "telemetry", "-d", host, "-t", "5")
        assert resumed.returncode == 0 and "resumed telemetry of core" in resumed.stdout, resumed.stderr
        wait_for(lambda: "telemetry" in _consuming(app, host), timeout_s=5, message="telemetry consumed again")
        assert app.tasks["basic.record"].apply_async(("after",), queue="telemetry").get(timeout=15) == "after"


def _capture(app: Celery, into: list[dict[str, Any]], ready: threading.Event, stop: threading.Event) -> None:
    with app.connection() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": into.append})
        receiver.should_stop = False

        def watch() -> None:
            stop.wait()
            receiver.should_stop = True

        threading.Thread(target=watch, daemon=True).start()
        ready.set()
        receiver.capture(limit=None, timeout=None, wakeup=False)


FAST = {"prismatic_backoff_initial_s": 0.1, "prismatic_backoff_max_s": 0.1, "prismatic_backoff_jitter_s": 0,
        "prismatic_remediation_rules": [{"name": "fast", "match": {"exceptions": ["ConnectionError"]},
                                         "action": "restart_child"}],
        # dep: the circuit tests/apps/basic.py's call_dep task declares; payments: ours
        "prismatic_circuits": {"dep": {"fail_max": 3, "reset_timeout_s": 2}, "payments": {"fail_max": 3}}}


def test_every_supervision_event_of_a_live_run_carries_documented_fields(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """Restart, remediation, dead letter, escalation, pause, resume, circuit: Celery events and stream entries match
    EVENT_FIELDS."""
    app = make_app(redis_url, namespace, **FAST)
    env = basic_env(redis_url, namespace, FAST)
    host = f"ev-{namespace}@test"
    captured: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=_capture, args=(app, captured, ready, stop), daemon=True)
    listener.start()
    assert ready.wait(10)
    try:
        with WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2, env=env, cwd=ROOT,
                           extra_args=["-E"]) as worker:
            worker.wait_ready(app)
            # a bad deploy: 20 storage messages each fail once (the child fails by rate, then recovers)
            flaky = [app.tasks["basic.flaky"].apply_async((f"ev{i}", 1), queue="storage") for i in range(20)]
            assert [r.get(timeout=30) for r in flaky] == [2] * 20
            fragile = app.tasks["basic.fragile"].apply_async(("ev-fragile",), queue="cache")
            with pytest.raises(LookupError):
                fragile.get(timeout=20)
            paused = celery(env, "supervision", "pause", "monitor", "--for", "20")
            assert paused.returncode == 0, paused.stderr
            celery(env, "supervision", "resume", "monitor")
            from prismatic_celery.runtime import get_runtime

            runtime = get_runtime(app)
            assert runtime is not None
            runtime.circuits.open_for("payments", 5_000)
            wanted = {"supervision-restart", "supervision-remediation", "supervision-pause", "supervision-resume",
                      "supervision-dead-letter", "supervision-escalation"}
            wait_for(lambda: wanted <= {e.get("type") for e in captured}, timeout_s=15,
                     message=f"Celery events {sorted(wanted)}")
    finally:
        stop.set()
    supervision_events = [e for e in captured if str(e.get("type", "")).startswith("supervision-")]
    for event in supervision_events:
        kind = event["type"][len("supervision-"):].replace("-", "_")
        undocumented = set(event) - CELERY_ENVELOPE - set(EVENT_FIELDS[kind])
        assert not undocumented, f"{event['type']} has undocumented fields {sorted(undocumented)}: {event}"
    entries = client.xrange(Keys(namespace).key("events"))
    kinds = {fields["type"] for _, fields in entries}
    assert {"restart", "pause", "resume", "circuit", "remediation", "dead_letter", "escalation"} <= kinds, kinds
    for _, fields in entries:
        undocumented = set(fields) - STREAM_ENVELOPE - set(EVENT_FIELDS[fields["type"]])
        assert not undocumented, f"stream {fields['type']} has undocumented fields {sorted(undocumented)}: {fields}"
