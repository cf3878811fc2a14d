"""``celery supervision ...``: tables for people, JSON for scripts, meaningful exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from click.testing import CliRunner, Result

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.cli.main import EXIT_ESCALATED, EXIT_OK, EXIT_UNHEALTHY, EXIT_UNKNOWN, supervision
from prismatic_celery.cli.tables import table
from prismatic_celery.observability.health import get_tree_health, summary_numbers
from prismatic_celery.runtime import Runtime
from prismatic_celery.store import MemoryStore, RedisStore
from prismatic_celery.supervision.pauses import Pause, read_pauses, set_pause
from prismatic_celery.testing import serve
from tests.conftest import free_port

DOMAINS = {
    "core": {"strategy": "rest_for_one", "children": ["storage", "cache", "telemetry"]},
    "osint": {"strategy": "one_for_one", "children": ["sources", "monitor"]},
}


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("clitest", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_store_url="memory://",
                    prismatic_circuits={"payments": {"fail_max": 2}})
    prismatic_celery.install(app, store=MemoryStore())
    serve(runtime_of(app))  # a live worker consumes every queue
    yield app


def runtime_of(app: Celery) -> Runtime:
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    return runtime


def run(app: Celery, *args: str) -> Result:
    result = CliRunner().invoke(supervision, list(args), obj=SimpleNamespace(app=app))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def escalate(runtime: Runtime, domain: str = "osint") -> None:
    now = runtime.store.time()
    runtime.store.set_json(runtime.keys.key("escalation", domain),
                           {"domain": domain, "at": now, "by": "sources", "reason": "supervisor_budget_exceeded"},
                           ttl_s=60)


def test_the_group_is_registered_as_a_celery_command() -> None:
    """`celery supervision` comes from the celery.commands entry point."""
    found = [ep for ep in entry_points(group="celery.commands") if ep.name == "supervision"]
    assert found and found[0].load() is supervision


def test_the_issue_commands_exist() -> None:
    """status, health, hotspots, circuits, lessons, resume, watch (plus pause, events, exporter)."""
    assert {"status", "health", "hotspots", "circuits", "lessons", "resume", "watch", "pause", "events",
            "exporter", "flowerconfig", "check", "tree", "workers"} <= set(supervision.commands)


def test_health_prints_a_readable_report_and_exits_0_when_healthy(app: Celery) -> None:
    """A quiet tree: score 100, every child listed, exit 0."""
    result = run(app, "health")
    assert result.exit_code == EXIT_OK, result.output
    assert "health 100/100  HEALTHY" in result.output
    assert "DOMAIN / CHILD" in result.output and "  telemetry" in result.output
    assert "payments  closed" in result.output
    assert "knowledge:" in result.output and "shed:" in result.output


def test_health_json_is_get_tree_health(app: Celery) -> None:
    """--json prints the same report the API and the inspect command return."""
    runtime = runtime_of(app)
    runtime.circuits.open_for("payments", 60_000)
    data = json.loads(run(app, "health", "--json").output)
    assert summary_numbers(data) == summary_numbers(get_tree_health(runtime))
    assert data["circuits"]["payments"]["state"] == "open"


def test_health_exits_4_below_min_score_and_2_when_escalated(app: Celery) -> None:
    """Exit codes for scripts: 4 under --min-score, 2 escalated (whatever the score)."""
    runtime = runtime_of(app)
    runtime.circuits.open_for("payments", 60_000)  # 85
    assert run(app, "health").exit_code == EXIT_OK
    assert run(app, "health", "--min-score", "90").exit_code == EXIT_UNHEALTHY
    escalate(runtime)
    result = run(app, "health", "--min-score", "0")
    assert result.exit_code == EXIT_ESCALATED
    assert "ESCALATED" in result.output and "escalations: osint (supervisor_budget_exceeded)" in result.output


def test_status_exits_2_when_a_domain_is_escalated(app: Celery) -> None:
    """status keeps its contract: 0 normally, 2 escalated."""
    assert run(app, "status").exit_code == EXIT_OK
    escalate(runtime_of(app))
    result = run(app, "status")
    assert result.exit_code == EXIT_ESCALATED
    assert [line.split() for line in result.output.splitlines() if line.startswith("osint")] == [
        ["osint", "one_for_one", "ESCALATED"]]


def test_pause_and_resume_a_child_from_the_cli(app: Celery) -> None:
    """pause writes a manual pause record (with the given length); resume ends it."""
    runtime = runtime_of(app)
    result = run(app, "pause", "telemetry", "--for", "45")
    assert result.exit_code == 0 and "paused telemetry of core for 45s" in result.output
    pause = read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["telemetry"])["telemetry"]
    assert pause.reason == "manual" and 44 < pause.until - pause.since <= 45
    assert "paused (manual by operator via cli" in run(app, "status").output
    result = run(app, "resume", "telemetry")
    assert result.exit_code == 0 and "1 paused queue(s) released" in result.output
    assert read_pauses(runtime.store, runtime.keys, runtime.supervisor, ["telemetry"]) == {}


def test_resume_a_domain_ends_its_pauses_cooldown_and_escalation(app: Celery) -> None:
    """A domain's resume clears every pause, the cool-down counter and the escalation record."""
    runtime = runtime_of(app)
    escalate(runtime)
    now = runtime.store.time()
    for queue in ("sources", "monitor"):
        set_pause(runtime.store, runtime.keys, Pause(queue, "osint", "escalated", "sources", now, now + 60))
    runtime.store.set_json(runtime.keys.key("cooldown", "osint"), 2)
    result = run(app, "resume", "osint")
    assert result.exit_code == 0 and "resumed osint: 2 paused queue(s) released" in result.output
    assert runtime.store.get_json(runtime.keys.key("escalation", "osint")) is None
    assert runtime.store.get_json(runtime.keys.key("cooldown", "osint")) is None
    assert run(app, "health").exit_code == EXIT_OK


def test_an_unknown_target_exits_1_naming_what_is_known(app: Celery) -> None:
    """A typo is an error naming the domains and queues."""
    for command in ("pause", "resume"):
        result = run(app, command, "cahce")
        assert result.exit_code == 1
        assert "'cahce' is neither a domain nor a supervised queue; known: core, osint, storage" in result.output


def test_circuits_lists_every_circuit_with_its_state(app: Celery) -> None:
    """A table for people, the shared record for scripts."""
    runtime_of(app).circuits.open_for("payments", 30_000)
    result = run(app, "circuits")
    assert "CIRCUIT" in result.output and "payments  OPEN" in result.output
    data = json.loads(run(app, "circuits", "--json").output)
    assert data["payments"]["state"] == "open" and data["payments"]["fail_max"] == 2


def test_hotspots_lists_children_over_the_threshold(app: Celery) -> None:
    """Four restarts in the window is a hotspot (threshold 3)."""
    runtime = runtime_of(app)
    now = runtime.store.time()
    for i in range(4):
        runtime.store.window_add(runtime.keys.key("restarts", "sources"), f"m{i}", now, 300, cap=100)
    assert "osint   sources  4" in run(app, "hotspots").output
    assert json.loads(run(app, "hotspots", "--json").output) == [
        {"domain": "osint", "child": "sources", "restarts": 4, "window_s": 300.0}]


def test_lessons_says_na_when_lessons_are_not_available(app: Celery) -> None:
    """Without the lessons piece: n/a, exit 0."""
    runtime = runtime_of(app)
    runtime.learning = None
    result = run(app, "lessons")
    assert result.exit_code == 0 and "knowledge: n/a" in result.output and "lessons: n/a" in result.output
    assert json.loads(run(app, "lessons", "--json").output) == {"knowledge": None, "lessons": None}


def test_lessons_lists_recorded_lessons_and_the_metrics(app: Celery) -> None:
    """Lessons and knowledge metrics are read through the runtime's pieces."""
    runtime = runtime_of(app)
    lesson = {"fingerprint": "abcdef0123456789", "failure_class": "external_dependency", "count": 3,
              "exc_type": "ConnectionError", "message": "refused",
              "remediations": {"retry_with_backoff": {"succeeded": 2, "tried": 3, "failed": 1}}}
    metrics = {"total_lessons": 1, "auto_remediated_pct": 50.0, "mean_time_to_recovery_s": 1.5,
               "escalation_rate": 0.25, "false_positive_rate": None}
    setattr(runtime, "learning", SimpleNamespace(  # a stand-in for the Learning piece
        lessons=SimpleNamespace(all=lambda limit: [SimpleNamespace(to_json=lambda: lesson)]),
        metrics=SimpleNamespace(snapshot=lambda: SimpleNamespace(to_json=lambda: metrics))))
    output = run(app, "lessons").output
    assert "1 lessons, auto-remediated 50.0% of known-pattern crashes, MTTR 1.5s, escalation rate 25.0%" in output
    assert "abcdef012345  external_dependency  3" in output and "retry_with_backoff 2/3" in output


def test_events_lists_the_newest_events_first(app: Celery) -> None:
    """The capped event stream, newest first."""
    run(app, "pause", "cache", "--for", "5")
    run(app, "resume", "cache")
    output = run(app, "events").output
    assert output.index("resume") < output.index("pause")
    assert [e["type"] for e in json.loads(run(app, "events", "--json", "--count", "1").output)] == ["resume"]


def test_watch_refreshes_count_times_and_exits_with_the_last_code(app: Celery) -> None:
    """watch --count N stops after N refreshes; --json prints one document per refresh."""
    escalate(runtime_of(app))
    result = run(app, "watch", "--count", "3", "--interval", "0.05", "--json")
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["state"] == "escalated" for line in lines)
    assert result.exit_code == EXIT_ESCALATED
    human = run(app, "watch", "--count", "2", "--interval", "0.05")
    assert human.output.count("status of namespace clitest, health 60/100 ESCALATED; every 0.05s") == 2
    assert human.output.count("DOMAIN / CHILD") == 2, "the status table, as `status` prints it"


def test_flowerconfig_prints_the_shipped_config_path() -> None:
    """The path handed to `celery flower --conf`."""
    result = CliRunner().invoke(supervision, ["flowerconfig"], obj=SimpleNamespace(app=None))
    path = Path(result.output.strip())
    assert result.exit_code == 0 and path.name == "flowerconfig.py" and path.is_file()


def test_commands_need_an_installed_app() -> None:
    """Without prismatic installed the command says so (exit 1)."""
    plain = Celery("plain", broker="memory://", set_as_current=False)
    result = CliRunner().invoke(supervision, ["health"], obj=SimpleNamespace(app=plain))
    assert result.exit_code == 1 and "not installed" in result.output


def test_optional_groups_are_added_when_their_modules_exist() -> None:
    """dlq and shed come from their own modules, when present."""
    import importlib.util

    for module, name in (("prismatic_celery.cli.remediation", "dlq"), ("prismatic_celery.cli.shedding", "shed")):
        assert (name in supervision.commands) == (importlib.util.find_spec(module) is not None)


def test_table_aligns_columns() -> None:
    """A small helper, exercised once."""
    assert table(["A", "BB"], [["xyz", 1], [None, "q"]]).splitlines() == ["A    BB", "xyz  1", "     q"]


# -- what cannot be known -----------------------------------------------------------------------------
@pytest.fixture
def dark_app() -> Iterator[Celery]:
    """An app whose store does not answer (nothing listens on its port)."""
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    app = Celery("dark", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_store_url=url)
    prismatic_celery.install(app, store=RedisStore(url, timeout_s=0.2))
    yield app


@pytest.mark.parametrize("command", [["health"], ["status"], ["workers"], ["check"], ["watch", "--count", "1"]])
def test_every_view_says_unknown_and_exits_5_when_the_store_does_not_answer(dark_app: Celery,
                                                                           command: list[str]) -> None:
    """No score, no running child, no empty worker list: unknown, exit 5, the password never printed."""
    for args in (command, [*command, "--json"]):
        result = run(dark_app, *args)
        assert result.exit_code == EXIT_UNKNOWN == 5, result.output
        assert "s3cret" not in result.output and "100/100" not in result.output and "running" not in result.output
        if "--json" in args and command[0] != "watch":
            data = json.loads(result.output)
            assert data.get("state") == "unknown" or data.get("reachable") is False, data
        else:
            assert "unknown" in result.output.lower(), result.output


def test_check_connects_unless_offline_and_names_the_store(app: Celery, dark_app: Celery) -> None:
    """check says which store and whether workers share it; --offline validates without connecting."""
    result = run(app, "check")
    assert result.exit_code == 0 and "store memory:// (in this process only" in result.output
    assert "answering" in result.output
    offline = run(dark_app, "check", "--offline")
    assert offline.exit_code == 0 and "not contacted (--offline)" in offline.output
    assert "(shared by every worker)" in offline.output and "s3cret" not in offline.output


def test_status_shows_a_child_no_live_worker_consumes_as_unserved() -> None:
    """Only core's queues have a worker: osint's children are unserved, in text and JSON."""
    app = Celery("half", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains=DOMAINS, prismatic_store_url="memory://")
    prismatic_celery.install(app, store=MemoryStore())
    serve(runtime_of(app), "core@h", ["storage", "cache", "telemetry"])
    result = run(app, "status")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  ")}
    assert "unserved" in lines["sources"] and "unserved" in lines["monitor"] and "running" in lines["storage"]
    data = json.loads(run(app, "status", "--json").output)
    assert [d["status"] for d in data["domains"]] == ["running", "unserved"]
