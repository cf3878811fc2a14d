"""``celery -A proj supervision lessons [show|forget|teach|export|import]``: what the cluster learned.

``lessons`` alone lists the lessons (most recently seen first) with the knowledge metrics.
A fingerprint argument may be any unique prefix of at least 6 characters (the list shows 12).
Exit codes: 0 done, 1 an error (no such lesson, an ambiguous prefix, a bad action or file).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import click

from ..errors import ConfigurationError
from ..lessons.ladder import ChoicePolicy, explain
from ..lessons.store import Lesson, LessonStore
from ..observability.views import knowledge_view, lessons_view
from ..remediation.actions import action_from_config
from .common import Report, emit, json_option, runtime_of
from .render import render_knowledge_line
from .tables import table

__all__ = ["lessons"]

_PREFIX_MIN = 6


def _store(ctx: click.Context) -> tuple[LessonStore, ChoicePolicy]:
    runtime = runtime_of(ctx)
    learning = getattr(runtime, "learning", None)
    store = getattr(learning, "lessons", None)
    if not isinstance(store, LessonStore):
        raise click.ClickException("lessons are not enabled (prismatic_lessons = False)")
    policy = getattr(learning, "policy", None)
    return store, policy if isinstance(policy, ChoicePolicy) else ChoicePolicy()


def _find(store: LessonStore, fingerprint: str) -> Lesson:
    """The lesson named by a fingerprint or a unique prefix of it (ClickException otherwise)."""
    lesson = store.get(fingerprint)
    if lesson is not None:
        return lesson
    if len(fingerprint) >= _PREFIX_MIN:
        found = [item for item in store.all(limit=None) if item.fingerprint.startswith(fingerprint)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise click.ClickException(f"{fingerprint!r} names {len(found)} lessons; give more characters")
    raise click.ClickException(f"no lesson {fingerprint!r}")


@click.group(name="lessons", invoke_without_command=True)
@json_option
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="Lessons listed.")
@click.pass_context
def lessons(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Lessons learned (most recently seen first) and the knowledge metrics; n/a when not enabled."""
    if ctx.invoked_subcommand is not None:
        return
    runtime = runtime_of(ctx)
    found = lessons_view(runtime, limit)
    knowledge = knowledge_view(runtime)
    data = {"knowledge": knowledge, "lessons": found}
    lines = ["knowledge: " + ("n/a" if knowledge is None else render_knowledge_line(knowledge))]
    if found is None:
        lines.append("lessons: n/a")
    elif not found:
        lines.append("no lessons recorded")
    else:
        rows = []
        for lesson in found:
            remediations = lesson.get("remediations") or {}
            tried = ", ".join(f"{name} {s.get('succeeded', 0)}/{s.get('tried', 0)}"
                              for name, s in sorted(remediations.items()))
            rows.append([str(lesson.get("fingerprint", ""))[:12], lesson.get("failure_class"), lesson.get("count"),
                         str(lesson.get("exc_type")), tried, str(lesson.get("message", ""))[:200]])
        lines.append(table(["FINGERPRINT", "CLASS", "COUNT", "EXCEPTION", "REMEDIATIONS (ok/tried)", "MESSAGE"],
                           rows, fit=5))
    emit(data, as_json, "\n".join(lines))


def render_lesson(lesson: Lesson, why: Report) -> str:
    """One lesson for a person: what it is, what its next crash gets and why, each remediation's record."""
    def when(at: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))

    lines = [
        f"lesson {lesson.fingerprint}",
        f"  class       {lesson.failure_class}",
        f"  exception   {lesson.exc_type}: {lesson.message[:200]}",
        f"  root cause  {lesson.root_cause[:200]}",
        f"  crashes     {lesson.count} (first {when(lesson.first_seen)}, last {when(lesson.last_seen)})",
        f"  tasks       {', '.join(lesson.tasks) or '-'}",
        f"  domains     {', '.join(lesson.domains) or '-'}",
        f"  taught      {lesson.taught or '-'}",
        f"  next crash  {why['preferred'] or 'walks the ladder'}: {why['reason']}",
    ]
    rows = [[r["remediation"], r["standing"], f"{r['succeeded']}/{r['succeeded'] + r['failed']}",
             "-" if r["recovery_rate"] is None else f"{100 * r['recovery_rate']:.0f}%",
             "-" if r["mean_recovery_s"] is None else f"{r['mean_recovery_s']:.3f}s", r["consecutive_failures"]]
            for r in why["remediations"]]
    if rows:
        lines += ["", table(["REMEDIATION", "STANDING", "RECOVERED", "RATE", "MEAN RECOVERY", "FAILED IN A ROW"],
                            rows)]
    else:
        lines += ["", "no remediation outcome recorded yet"]
    return "\n".join(lines)


@lessons.command()
@click.argument("fingerprint")
@json_option
@click.pass_context
def show(ctx: click.Context, fingerprint: str, as_json: bool) -> None:
    """One lesson: its record per remediation and why its next crash gets what it gets."""
    store, policy = _store(ctx)
    lesson = _find(store, fingerprint)
    why = explain(lesson, policy, store.store.time())
    emit({"lesson": lesson.to_json(), **why}, as_json, render_lesson(lesson, why))


@lessons.command()
@click.argument("fingerprint")
@json_option
@click.pass_context
def forget(ctx: click.Context, fingerprint: str, as_json: bool) -> None:
    """Delete a lesson: its next crash starts from the rules and the ladder again."""
    store, _ = _store(ctx)
    lesson = _find(store, fingerprint)
    store.delete(lesson.fingerprint)
    emit({"forgotten": lesson.fingerprint}, as_json, f"forgot lesson {lesson.fingerprint}")


def _params(values: Sequence[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw  # a bare word is a string
    return params


@lessons.command()
@click.argument("fingerprint")
@click.argument("action", required=False)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="An action parameter, e.g. --param target=payments --param duration_ms=5000.")
@click.option("--clear", is_flag=True, help="Forget what was taught; the lesson chooses again.")
@json_option
@click.pass_context
def teach(ctx: click.Context, fingerprint: str, action: str | None, params: tuple[str, ...], clear: bool,
          as_json: bool) -> None:
    """Pin ACTION (a registered remediation: retry_with_backoff, recycle_process, circuit_break, restart_child,
    dead_letter, escalate...) for every later crash of FINGERPRINT. A user rule still pins its own."""
    if clear == (action is not None):
        raise click.UsageError("give ACTION, or --clear")
    store, _ = _store(ctx)
    lesson = _find(store, fingerprint)
    chosen = None
    if action is not None:
        try:
            chosen = action_from_config("ACTION", {"action": action, **_params(params)})
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
    taught = store.teach(lesson.fingerprint, chosen.to_json() if chosen is not None else None)
    if taught is None:
        raise click.ClickException(f"lesson {lesson.fingerprint} could not be updated (see the log)")
    human = (f"lesson {lesson.fingerprint}: every later crash gets {chosen.label}" if chosen is not None
             else f"lesson {lesson.fingerprint}: taught action forgotten")
    emit({"lesson": taught.to_json()}, as_json, human)


@lessons.command(name="export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Report what was written as JSON (FILE '-' is JSON anyway).")
@click.pass_context
def export_(ctx: click.Context, file: str, as_json: bool) -> None:
    """Write every lesson as a JSON list to FILE ('-' for standard output)."""
    store, _ = _store(ctx)
    data = store.export()
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if file == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(file, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {file}: {exc}") from None
    if as_json:
        emit({"exported": len(data), "file": file}, True, "")
    else:
        click.echo(f"exported {len(data)} lessons to {file}", err=True)


@lessons.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@click.pass_context
def import_(ctx: click.Context, file: str, as_json: bool) -> None:
    """Merge the lessons of FILE (an export; '-' for standard input) into this cluster's."""
    store, _ = _store(ctx)
    try:
        if file == "-":
            data = json.load(sys.stdin)
        else:
            with open(file, encoding="utf-8") as handle:
                data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    if not isinstance(data, list):
        raise click.ClickException(f"{file} does not hold a JSON list of lessons")
    imported = store.import_(data)
    emit({"imported": imported, "skipped": len(data) - imported}, as_json,
         f"imported {imported} lessons, skipped {len(data) - imported}")
