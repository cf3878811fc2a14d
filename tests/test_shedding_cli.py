"""``celery supervision shed list|replay|purge``, driven with click's CliRunner."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from celery import Celery
from click.testing import CliRunner, Result

from prismatic_celery import install
from prismatic_celery.admission.shedding import QueuePolicy, park, parked_key, publish_sample, totals_key
from prismatic_celery.cli.main import supervision
from prismatic_celery.cli.shedding import shed
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store.memory import MemoryStore


def _app() -> tuple[Celery, Runtime, list[dict[str, Any]]]:
    app = Celery("shedcli", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains={"bulk": {"children": ["bulk", "reports"], "cluster_concurrency": 3}},
                    prismatic_send_events=False)
    install(app, store=MemoryStore())
    runtime = get_runtime(app)
    assert runtime is not None
    sent: list[dict[str, Any]] = []
    app.send_task = lambda name, **kw: sent.append({"task": name, **kw})  # type: ignore[method-assign,assignment,misc,return-value]
    for i in range(3):
        park(runtime.store, runtime.keys, "bulk", json.dumps({"id": f"t{i}", "task": "x.y", "queue": "bulk",
                                                              "args": [i], "kwargs": {}, "priority": 9,
                                                              "importance": 0, "parked_at": 0}), cap=100)
    return app, runtime, sent


def _invoke(app: Celery, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(shed, list(args), obj=SimpleNamespace(app=app), input=input)


def _shedding(runtime: Runtime, queue: str) -> None:
    publish_sample(runtime.store, runtime.keys, {queue: 5000}, {queue: QueuePolicy(queue, 1000, 800, 5, "park")},
                   ttl_s=60, sampler="w1")


def test_list_shows_each_queue_and_a_queues_parked_messages() -> None:
    """Without QUEUE: one row per supervised queue; with QUEUE: its oldest parked messages."""
    app, runtime, _ = _app()
    _shedding(runtime, "bulk")
    rows = json.loads(_invoke(app, "list", "--json").output)
    assert [(r["queue"], r["shedding"], r["backlog"], r["parked_now"]) for r in rows] == [
        ("bulk", True, 5000, 3), ("reports", False, None, 0)]
    human = _invoke(app, "list").output
    assert "SHEDDING" in human and "bulk" in human
    parked = json.loads(_invoke(app, "list", "bulk", "--limit", "2", "--json").output)
    assert [p["id"] for p in parked] == ["t0", "t1"]
    assert "t2" in _invoke(app, "list", "bulk").output


def test_replay_refuses_a_shedding_queue_unless_forced() -> None:
    """Exit 2 and nothing published while the queue sheds; --force replays every message once."""
    app, runtime, sent = _app()
    _shedding(runtime, "bulk")
    refused = _invoke(app, "replay", "bulk")
    assert refused.exit_code == 2 and "skipped" in refused.output and sent == []
    forced = _invoke(app, "replay", "bulk", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output) == [{"queue": "bulk", "replayed": 3, "put_back": 0, "skipped_corrupt": 0,
                                          "error": None}]
    assert [s["task_id"] for s in sent] == ["t0", "t1", "t2"]
    assert all(s["headers"] == {"prismatic_replayed": 1} and s["priority"] == 9 and s["queue"] == "bulk" for s in sent)
    assert runtime.store.list_len(parked_key(runtime.keys, "bulk")) == 0


def test_replay_all_and_a_failing_broker() -> None:
    """--all covers every queue; a publish failure exits 1 with the message put back."""
    app, runtime, _ = _app()

    def down(name: str, **kw: Any) -> None:
        raise ConnectionError("broker down")

    app.send_task = down  # type: ignore[method-assign,assignment]
    result = _invoke(app, "replay", "--all")
    assert result.exit_code == 1 and "broker down" in result.output
    assert runtime.store.list_len(parked_key(runtime.keys, "bulk")) == 3


def test_purge_asks_first_and_counts() -> None:
    """Without --yes it asks; a "no" keeps everything."""
    app, runtime, _ = _app()
    assert _invoke(app, "purge", "bulk", input="n\n").exit_code == 1
    assert runtime.store.list_len(parked_key(runtime.keys, "bulk")) == 3
    result = _invoke(app, "purge", "bulk", "--yes", "--json")
    assert json.loads(result.output) == [{"queue": "bulk", "purged": 3}]


def test_unknown_queue_and_missing_app_are_usage_errors() -> None:
    """Queue names are checked against the tree; the group needs the celery app as context."""
    app, _, _ = _app()
    bad = _invoke(app, "replay", "nope")
    assert bad.exit_code == 2 and "not a supervised queue" in bad.output
    assert _invoke(app, "replay").exit_code == 2
    assert CliRunner().invoke(shed, ["list"], obj=SimpleNamespace(app=None)).exit_code == 2


def _supervision(app: Celery, *args: str) -> Result:
    return CliRunner().invoke(supervision, list(args), obj=SimpleNamespace(app=app))


def test_status_health_and_tree_show_shed_counts_and_the_cluster_cap() -> None:
    """status: each child's counts per mode (text and JSON); health: per queue and mode; tree: cluster_concurrency."""
    app, runtime, _ = _app()
    runtime.store.hincr(totals_key(runtime.keys), {"reports:dropped": 2})
    status = json.loads(_supervision(app, "status", "--json").output)
    children = {c["queue"]: c["shed"] for c in status["domains"][0]["children"]}
    assert children == {"bulk": {"park": 3, "drop": 0}, "reports": {"park": 0, "drop": 2}}
    assert status["shed"]["total"] == 5
    text = _supervision(app, "status").output
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "SHED" in text.splitlines()[0]
    assert "3 parked / 0 dropped" in rows["bulk"] and "0 parked / 2 dropped" in rows["reports"]
    health = _supervision(app, "health")
    assert "shed: 5 total (bulk 3 parked / 0 dropped, reports 0 parked / 2 dropped)" in health.output
    assert json.loads(_supervision(app, "health", "--json").output)["shed"]["queues"]["reports"] == {"park": 0,
                                                                                                    "drop": 2}
    assert "cluster concurrency 3" in _supervision(app, "tree").output
    assert json.loads(_supervision(app, "tree", "--json").output)["domains"][0]["cluster_concurrency"] == 3
