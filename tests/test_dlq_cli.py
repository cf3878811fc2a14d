"""`celery supervision dlq list|show|replay|purge`: readable for people, JSON for scripts, exit codes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from celery import Celery
from click.testing import CliRunner

from prismatic_celery import install
from prismatic_celery.cli.remediation import dlq
from prismatic_celery.remediation.dlq import dead_letter_entry
from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.memory import MemoryStore


def _setup() -> tuple[Celery, Any]:
    app = Celery("dlqcli", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains={"core": {"children": ["storage"]}}, prismatic_send_events=False)
    install(app, store=MemoryStore())

    @app.task(name="proj.save", shared=False)
    def save(i: int, k: str) -> None:
        """The task the dead letters name."""

    runtime = get_runtime(app)
    assert runtime is not None
    for i in range(3):
        runtime.dlq.push(dead_letter_entry(task="proj.save", task_id=f"id-{i}", args=[i], kwargs={"k": "v"},
                                           queue="storage", domain="core", reason="escalated: unknown",
                                           exception="LookupError"))
    return app, runtime


def _run(app: Celery, *args: str, input_: str | None = None) -> Any:
    return CliRunner().invoke(dlq, list(args), obj=SimpleNamespace(app=app), input=input_)


def test_list_and_show_for_people_and_scripts() -> None:
    """list shows one line per dead letter; --json is machine-readable; show prints one entry."""
    app, _ = _setup()
    people = _run(app, "list", "core")
    assert people.exit_code == 0 and people.output.count("proj.save") == 3
    data = json.loads(_run(app, "list", "core", "--json").output)
    assert [e["id"] for e in data] == ["id-0", "id-1", "id-2"]
    shown = _run(app, "show", "core", "id-1")
    assert shown.exit_code == 0 and json.loads(shown.output)["args"] == [1]
    assert _run(app, "show", "core", "nope").exit_code == 1


def test_replay_publishes_each_dead_letter_once() -> None:
    """replay removes the entry and publishes it; replaying it again exits 1."""
    app, runtime = _setup()
    first = _run(app, "replay", "core", "id-0")
    assert first.exit_code == 0 and "replayed id-0" in first.output
    assert runtime.dlq.count("core") == 2
    again = _run(app, "replay", "core", "id-0")
    assert again.exit_code == 1 and "no dead letter id-0" in again.output
    everything = _run(app, "replay", "core", "--all")
    assert everything.exit_code == 0 and runtime.dlq.count("core") == 0


def test_purge_asks_first_and_unknown_domains_are_refused() -> None:
    """purge confirms unless --yes; an unknown domain exits 1 with one line naming the known ones."""
    app, runtime = _setup()
    assert _run(app, "purge", "core", input_="n\n").exit_code == 1
    assert runtime.dlq.count("core") == 3
    assert "purged 3" in _run(app, "purge", "core", "--yes").output
    unknown = _run(app, "list", "nowhere")
    assert unknown.exit_code == 1 and "known: core" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1


def test_replaying_a_task_this_app_does_not_know_needs_force() -> None:
    """A dead letter naming an unregistered task stays put (a worker would discard it) unless --force."""
    app, runtime = _setup()
    runtime.dlq.push(dead_letter_entry(task="proj.renamed", task_id="ghost", args=[], kwargs={}, queue="storage",
                                       domain="core", reason="escalated"))
    refused = _run(app, "replay", "core", "ghost")
    assert refused.exit_code == 1 and "not registered" in refused.output
    assert runtime.dlq.get("core", "ghost") is not None
    forced = _run(app, "replay", "core", "ghost", "--force")
    assert forced.exit_code == 0 and runtime.dlq.get("core", "ghost") is None
