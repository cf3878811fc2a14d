"""One CLI convention for every `celery supervision` command: `--json` with typed values, the documented exit
codes, columns sized to their content and the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from celery import Celery

from prismatic_celery.cli.main import (
    EXIT_ERROR,
    EXIT_ESCALATED,
    EXIT_NO_WORKERS,
    EXIT_OK,
    EXIT_UNHEALTHY,
    render_state,
    supervision,
    tree_state,
)
from prismatic_celery.cli.render import render_events
from prismatic_celery.cli.tables import table
from prismatic_celery.observability.workers import unregister_worker
from prismatic_celery.runtime import Runtime
from prismatic_celery.supervision.pauses import Pause, set_pause
from tests.test_cli import app, escalate, run, runtime_of  # noqa: F401  (the app fixture)


def leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield path, command  # a group that lists on its own (lessons) is a command too
            yield from leaves(command, path)
        else:
            yield path, command


def test_every_command_takes_json() -> None:
    """Every command and every command group that prints on its own has --json."""
    missing = [" ".join(path) for path, command in leaves(supervision)
               if not (isinstance(command, click.Group) and not command.invoke_without_command)
               and not any("--json" in p.opts for p in command.params)]
    assert missing == []


def pause_telemetry(runtime: Runtime) -> None:
    now = runtime.store.time()
    set_pause(runtime.store, runtime.keys, Pause("telemetry", "core", "manual", "operator via a very long name", now,
                                                 now + 60))


def no_workers(runtime: Runtime) -> None:
    unregister_worker(runtime.store, runtime.keys, "test@localhost")


def nothing(runtime: Runtime) -> None:
    return None


#: (arguments, what is set up first, the exit code the README documents)
CASES: list[tuple[list[str], Callable[[Runtime], None], int]] = [
    (["check", "--json"], nothing, EXIT_OK),
    (["check", "--offline", "--json"], nothing, EXIT_OK),
    (["tree", "--json"], nothing, EXIT_OK),
    (["status", "--json"], nothing, EXIT_OK),
    (["status", "--json"], escalate, EXIT_ESCALATED),
    (["health", "--json"], nothing, EXIT_OK),
    (["health", "--json"], escalate, EXIT_ESCALATED),
    (["health", "--json", "--min-score", "100"], pause_telemetry, EXIT_UNHEALTHY),
    (["watch", "--json", "--count", "1"], nothing, EXIT_OK),
    (["watch", "--json", "--count", "1"], escalate, EXIT_ESCALATED),
    (["watch", "--json", "--count", "1", "--min-score", "100"], pause_telemetry, EXIT_UNHEALTHY),
    (["workers", "--json"], nothing, EXIT_OK),
    (["workers", "--json"], no_workers, EXIT_NO_WORKERS),
    (["hotspots", "--json"], nothing, EXIT_OK),
    (["circuits", "--json"], nothing, EXIT_OK),
    (["events", "--json"], nothing, EXIT_OK),
    (["lessons", "--json"], nothing, EXIT_OK),
    (["lessons", "show", "abcdef123456", "--json"], nothing, EXIT_ERROR),
    (["lessons", "forget", "abcdef123456", "--json"], nothing, EXIT_ERROR),
    (["lessons", "teach", "abcdef123456", "recycle_process", "--json"], nothing, EXIT_ERROR),
    (["lessons", "import", "/nonexistent/lessons.json", "--json"], nothing, EXIT_ERROR),
    (["lessons", "export", "/nonexistent/dir/lessons.json", "--json"], nothing, EXIT_ERROR),
    (["pause", "cache", "--for", "5", "--json"], nothing, EXIT_OK),
    (["pause", "cahce", "--json"], nothing, EXIT_ERROR),
    (["resume", "cache", "--json"], nothing, EXIT_OK),
    (["resume", "cahce", "--json"], nothing, EXIT_ERROR),
    (["dlq", "list", "core", "--json"], nothing, EXIT_OK),
    (["dlq", "list", "nowhere", "--json"], nothing, EXIT_ERROR),
    (["dlq", "show", "core", "missing-id", "--json"], nothing, EXIT_ERROR),
    (["dlq", "replay", "core", "missing-id", "--json"], nothing, EXIT_ERROR),
    (["dlq", "purge", "core", "--yes", "--json"], nothing, EXIT_OK),
    (["dlq", "purge", "nowhere", "--yes", "--json"], nothing, EXIT_ERROR),
    (["flowerconfig", "--json"], nothing, EXIT_OK),
]


@pytest.mark.parametrize(("args", "setup", "code"), CASES, ids=[" ".join(c[0]) + f" -> {c[2]}" for c in CASES])
def test_exit_codes_are_as_documented(app: Celery, args: list[str], setup: Callable[[Runtime], None],  # noqa: F811
                                      code: int) -> None:
    """Each command exits with the README's code; its success prints JSON, its error one line (a replay of
    several letters reports each one's outcome as JSON)."""
    setup(runtime_of(app))
    result = run(app, *args)
    assert result.exit_code == code, result.output
    if code == EXIT_ERROR and args[:2] != ["dlq", "replay"]:  # replay --json reports each letter's outcome
        assert len(result.output.strip().splitlines()) == 1, result.output
    elif args[0] != "watch":
        json.loads(result.output)


def test_json_values_are_typed(app: Celery) -> None:  # noqa: F811
    """Numbers are numbers in --json (the event stream stores strings; the CLI types them back)."""
    runtime = runtime_of(app)
    runtime.emit("remediation", domain="core", child="storage", task="t", task_id="123", exception="E",
                 attempt=2, countdown_s=1.5)
    [event] = json.loads(run(app, "events", "--json").output)
    assert event["attempt"] == 2 and event["countdown_s"] == 1.5 and isinstance(event["time"], float)
    assert event["task_id"] == "123", "ids stay strings"
    pause = json.loads(run(app, "pause", "cache", "--for", "5", "--json").output)
    assert pause == {"domain": "core", "queues": ["cache"], "seconds": 5.0}
    assert json.loads(run(app, "resume", "cache", "--json").output)["released"] == 1
    check = json.loads(run(app, "check", "--json").output)
    assert check["domains"] == 2 and check["reachable"] is True and check["ok"] is True


def test_status_rows_stay_aligned_when_a_queue_is_paused(app: Celery) -> None:  # noqa: F811
    """Every row's restarts column starts at the same place, whatever the paused child's state says."""
    pause_telemetry(runtime_of(app))
    text = render_state(tree_state(runtime_of(app)))
    lines = text.splitlines()
    column = lines[0].index("RESTARTS")
    children = [line for line in lines if line.startswith("  ")]
    assert any("paused (manual by operator via a very long name" in line for line in children)
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in children), text


def test_events_detail_is_sized_to_the_terminal_not_cut_at_a_fixed_width(app: Celery,  # noqa: F811
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe gets every character; a terminal of N columns gets lines of at most N."""
    event = {"id": "1-0", "type": "remediation", "time": 0.0, "domain": "core", "child": "storage",
             "detail": "x" * 300}
    piped = render_events([event])
    assert "x" * 300 in piped
    monkeypatch.setattr("prismatic_celery.cli.tables.terminal_width", lambda: 200)
    wide = render_events([event])
    assert max(len(line) for line in wide.splitlines()) == 200 and wide.splitlines()[1].endswith("...")
    monkeypatch.setattr("prismatic_celery.cli.tables.terminal_width", lambda: 100)
    assert max(len(line) for line in render_events([event]).splitlines()) == 100


def test_a_table_gives_way_only_in_its_fitted_column() -> None:
    text = table(["A", "B"], [["aaaa", "b" * 50]], fit=1, width=30)
    assert text.splitlines() == ["A     B", "aaaa  " + "b" * 21 + "..."]
    assert table(["A", "B"], [["aaaa", "b" * 50]], fit=1, width=None).endswith("b" * 50)


def test_workers_are_a_table(app: Celery) -> None:  # noqa: F811
    lines = run(app, "workers").output.splitlines()
    assert lines[0].split() == ["WORKER", "PID", "POOL", "CONCURRENCY", "DOMAINS", "QUEUES"]
    assert lines[1].split()[0] == "test@localhost" and lines[1].index("solo") == lines[0].index("POOL")


def test_flowerconfig_json_names_the_shipped_file() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(supervision, ["flowerconfig", "--json"], obj=None)
    assert Path(json.loads(result.output)["path"]).name == "flowerconfig.py"
