"""``celery supervision lessons show|forget|teach|export|import``: an operator sees, forgets and teaches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from click.testing import CliRunner, Result

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.cli.main import supervision
from prismatic_celery.lessons import LessonStore
from prismatic_celery.store import MemoryStore


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("lessoncli", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains={"core": {"children": ["storage"]}}, prismatic_store_url="memory://")
    prismatic_celery.install(app, store=MemoryStore())
    yield app


def lessons_of(app: Celery) -> LessonStore:
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None and runtime.learning is not None
    return runtime.learning.lessons


def run(app: Celery, *args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(supervision, ["lessons", *args], obj=SimpleNamespace(app=app), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def seed(store: LessonStore) -> list[str]:
    fps = ["a1" * 16, "b2" * 16]
    for i, fp in enumerate(fps):
        store.record_crash(fp, task=f"app.t{i}", domain="core", failure_class="external_dependency",
                           exc_type="ConnectionError", message=f"refused {i}", when=1000.0 + i)
        store.record_outcome(fp, "recycle_process", True, recovery_s=0.3)
    return fps


def test_export_forget_import_round_trip(app: Celery, tmp_path: Path) -> None:
    """What is exported, forgotten and imported again is the same lesson, outcomes included."""
    store = lessons_of(app)
    fps = seed(store)
    before = {fp: store.get(fp) for fp in fps}
    path = tmp_path / "lessons.json"
    assert run(app, "export", str(path)).exit_code == 0
    exported = json.loads(path.read_text())
    assert sorted(item["fingerprint"] for item in exported) == sorted(fps)

    forgot = run(app, "forget", fps[0][:8], "--json")
    assert forgot.exit_code == 0 and json.loads(forgot.output) == {"forgotten": fps[0]}
    assert store.get(fps[0]) is None
    missing = run(app, "show", fps[0])
    assert missing.exit_code == 1 and "no lesson" in missing.output

    imported = run(app, "import", str(path), "--json")
    assert imported.exit_code == 0 and json.loads(imported.output) == {"imported": 2, "skipped": 0}
    assert store.get(fps[0]) == before[fps[0]]  # forgotten, then carried back whole
    assert store.get(fps[1]) is not None and store.get(fps[1]).count == 2  # type: ignore[union-attr]  # merged


def test_show_says_what_the_next_crash_gets_and_why(app: Celery) -> None:
    store = lessons_of(app)
    fp = seed(store)[0]
    for _ in range(2):
        store.record_outcome(fp, "recycle_process", True, recovery_s=0.3)
    shown = run(app, "show", fp[:10])
    assert shown.exit_code == 0, shown.output
    assert "next crash  recycle_process: best recovery rate 100% over 3 attempts" in shown.output
    data = json.loads(run(app, "show", fp, "--json").output)
    assert data["preferred"] == "recycle_process" and data["remediations"][0]["standing"] == "qualified"


def test_teach_pins_a_validated_action_and_clear_forgets_it(app: Celery) -> None:
    store = lessons_of(app)
    fp = seed(store)[0]
    taught = run(app, "teach", fp, "circuit_break", "--param", "target=payments", "--param", "duration_ms=5000")
    assert taught.exit_code == 0, taught.output
    assert "every later crash gets circuit_break(payments,5000)" in taught.output
    assert json.loads(store.get(fp).taught) == {  # type: ignore[union-attr]
        "action": "circuit_break", "duration_ms": 5000, "target": "payments"}
    bad = run(app, "teach", fp, "rm_rf")
    assert bad.exit_code == 1 and "ACTION" in bad.output
    bad_param = run(app, "teach", fp, "retry_with_backoff", "--param", "initial_ms=-5")
    assert bad_param.exit_code == 1 and "initial_ms" in bad_param.output
    assert run(app, "teach", fp).exit_code == 2  # neither an action nor --clear
    assert run(app, "teach", fp, "--clear").exit_code == 0
    assert store.get(fp).taught == ""  # type: ignore[union-attr]


def test_import_of_a_file_that_is_not_an_export_fails_with_one_line(app: Celery, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"not": "a list"}')
    result = run(app, "import", str(path))
    assert result.exit_code == 1 and "does not hold a JSON list" in result.output
    assert run(app, "import", "-", stdin="[]").output.strip() == "imported 0 lessons, skipped 0"


def test_plain_lessons_still_lists(app: Celery) -> None:
    seed(lessons_of(app))
    result = run(app)
    assert result.exit_code == 0 and "FINGERPRINT" in result.output and "recycle_process 1/1" in result.output
