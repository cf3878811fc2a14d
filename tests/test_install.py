"""install(app) wires the plugin the Celery way; the tree API validates like the config does."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery, Task

import prismatic_celery
from prismatic_celery import (
    Child,
    ConfigurationError,
    Domain,
    RestartBudget,
    SupervisionEvent,
    SupervisionListener,
    Supervisor,
    install,
)
from prismatic_celery.observability.events import Dispatcher
from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.store.memory import MemoryStore
from prismatic_celery.worker.bootsteps import DomainStep, SupervisionStep
from prismatic_celery.worker.task import SupervisedTask


def _app(**conf: Any) -> Celery:
    app = Celery("inst", broker="memory://", set_as_current=False)
    app.conf.update(conf)
    return app


def test_tasks_declared_after_install_are_supervised() -> None:
    """@app.task after install derives from SupervisedTask."""
    app = _app()
    install(app, store=MemoryStore())

    @app.task(shared=False)
    def plain() -> int:
        return 1

    assert isinstance(plain, SupervisedTask)
    assert plain() == 1


def test_tasks_with_their_own_base_are_supervised_at_finalize() -> None:
    """A task whose base= is not supervised gets SupervisedTask mixed in; its overrides still apply."""
    app = _app()

    class Audited(Task):  # type: ignore[type-arg]
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            self.seen = True

    @app.task(base=Audited, shared=False, name="inst.own_base")
    def own() -> str:
        return "ran"

    app.finalize()
    install(app, store=MemoryStore())
    task = app.tasks["inst.own_base"]
    assert isinstance(task, SupervisedTask) and isinstance(task, Audited)
    assert task() == "ran"
    assert not isinstance(app.tasks["celery.chord_unlock"], SupervisedTask), "Celery's own tasks are left alone"


def test_install_adds_bootsteps_and_the_domain_option() -> None:
    """The worker blueprint gets DomainStep, the consumer SupervisionStep, and `--domain` exists."""
    app = _app()
    install(app, store=MemoryStore())
    assert DomainStep in app.steps["worker"]
    assert SupervisionStep in app.steps["consumer"]
    assert any(opt.name == "domain" for opt in app.user_options["worker"])


def test_python_tree_and_config_tree_cannot_both_be_declared() -> None:
    """Declaring the tree twice is a configuration error naming prismatic_domains."""
    app = _app(prismatic_domains={"core": {"children": ["q"]}})
    install(app, supervisor=Supervisor(domains=[Domain("core", children=["q"])]), store=MemoryStore())
    with pytest.raises(ConfigurationError, match=r"^prismatic_domains: the tree is declared twice"):
        get_runtime(app)


def test_python_api_declares_the_tree() -> None:
    """Supervisor/Domain/Child build the same tree as the settings."""
    tree = Supervisor(
        domains=[
            Domain("core", strategy="rest_for_one", children=["storage", Child("cache", restart="transient")],
                   budget=RestartBudget(5, 30)),
        ],
    )
    app = _app()
    install(app, supervisor=tree, store=MemoryStore())
    runtime = get_runtime(app)
    assert runtime is not None
    assert runtime.supervisor.describe()["domains"][0]["children"] == [
        {"queue": "storage", "restart": "permanent", "tasks": []},
        {"queue": "cache", "restart": "transient", "tasks": []},
    ]


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: Domain("core", children=[]), "Domain('core').children"),
        (lambda: Domain("core", children=["a"], strategy="nope"), "Domain('core').strategy"),
        (lambda: Domain("core", children=["a", "a"]), "Domain('core').children"),
        (lambda: Child("q", restart="sometimes"), "Child('q').restart"),
        (lambda: RestartBudget(-1, 5), "RestartBudget.max_restarts"),
        (lambda: RestartBudget(1, -5), "RestartBudget.period_s"),
        (lambda: Supervisor(domains=[Domain("a", children=["q"]), Domain("b", children=["q"])]), "Supervisor.domains"),
        (lambda: Supervisor(domains=[Domain("a", children=["q"]), Domain("a", children=["r"])]),
         "Supervisor.domains['a']"),
    ],
)
def test_python_api_errors_name_the_field(build: Any, setting: str) -> None:
    """The Python API rejects the same mistakes as the settings, naming the field."""
    with pytest.raises(ConfigurationError) as raised:
        build()
    assert raised.value.setting == setting


def test_disabled_leaves_tasks_alone() -> None:
    """prismatic_enabled=False: no runtime, tasks run as plain Celery."""
    app = _app(prismatic_enabled=False)
    install(app, store=MemoryStore())
    assert get_runtime(app) is None

    @app.task(shared=False)
    def plain() -> int:
        return 2

    assert plain() == 2


def test_tasks_routed_by_child_globs() -> None:
    """A task matching a child's `tasks` glob is routed to the child's queue."""
    app = _app(prismatic_domains={"osint": {"children": [{"queue": "sources", "tasks": ["osint.*"]}]}})
    install(app, store=MemoryStore())
    app.conf.get("prismatic_enabled")
    route = app.amqp.router.route({}, "osint.fetch")
    assert route["queue"].name == "sources"
    assert app.amqp.router.route({}, "other.task")["queue"].name == "celery"


def test_keys_are_namespaced_and_parseable() -> None:
    """Every key is prismatic:{<app>}:<kind>:<name> (one hash tag per app); foreign keys parse as None."""
    keys = Keys("shop")
    assert keys.key("restarts", "core", "storage") == "prismatic:{shop}:restarts:core:storage"
    assert keys.key("events") == "prismatic:{shop}:events"
    assert keys.parse("prismatic:{shop}:pause:cache") == ("pause", "cache")
    assert keys.parse("prismatic:{other}:pause:cache") is None
    assert keys.parse("prismatic:shop:pause:cache") is None, "the format without the hash tag is foreign"
    assert keys.pattern("worker") == "prismatic:{shop}:worker*"
    with pytest.raises(ValueError):
        Keys("a:b")
    with pytest.raises(ValueError):
        keys.key("Bad Kind", "x")


class Recorder(SupervisionListener):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_restart(self, event: SupervisionEvent) -> None:
        self.seen.append(event.fields["child"])


class Broken(SupervisionListener):
    def on_restart(self, event: SupervisionEvent) -> None:
        raise RuntimeError("listener bug")


def test_a_broken_listener_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises does not stop the next one and is logged."""
    recorder = Recorder()
    dispatcher = Dispatcher([Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="prismatic_celery"):
        dispatcher.emit(SupervisionEvent("restart", {"child": "cache"}))
    assert recorder.seen == ["cache"]
    assert "listener-failed" in caplog.text and "listener bug" in caplog.text


def test_unknown_event_types_are_rejected() -> None:
    """Only the documented supervision event types exist."""
    with pytest.raises(ValueError, match="unknown supervision event type"):
        SupervisionEvent("explosion")
    assert SupervisionEvent("circuit").celery_type == "supervision-circuit"
    assert SupervisionEvent("dead_letter").celery_type == "supervision-dead-letter"


def test_celery_events_carry_the_fields_and_never_clash_with_the_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead letter is sent as supervision-dead-letter; a field named type or hostname (Celery's own envelope)
    never breaks the send."""
    from contextlib import contextmanager

    from prismatic_celery.observability.events import CeleryEventListener

    app = _app()
    sent: list[tuple[str | None, str, dict[str, Any]]] = []

    class FakeDispatcher:
        def __init__(self, hostname: str | None) -> None:
            self.hostname = hostname

        def send(self, type: str, **fields: Any) -> None:
            sent.append((self.hostname, type, fields))

    @contextmanager
    def dispatcher(hostname: str | None = None) -> Any:
        yield FakeDispatcher(hostname)

    monkeypatch.setattr(app.events, "default_dispatcher", dispatcher)
    listener = CeleryEventListener(app)
    listener.on_dead_letter(SupervisionEvent("dead_letter", {"type": "dead_letter", "hostname": "w@x", "attempts": 2,
                                                              "reason": "restarts_exhausted"}))
    assert sent == [("w@x", "supervision-dead-letter", {"attempts": 2, "reason": "restarts_exhausted"})]


def test_public_api_is_exported() -> None:
    """Everything in __all__ is importable from the package."""
    for name in prismatic_celery.__all__:
        assert hasattr(prismatic_celery, name), name
