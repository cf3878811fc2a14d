"""A bad configuration is one message naming the setting, wherever it shows: `check`, the producer, the worker.

(The worker's exit and line count are in tests/integration/test_worker.py: it needs a real worker.)
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from celery import Celery
from click.testing import CliRunner

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery import ConfigurationError
from prismatic_celery.cli.main import EXIT_ERROR, supervision
from prismatic_celery.config_table import SETTINGS
from prismatic_celery.store import MemoryStore
from prismatic_celery.worker.bootsteps import unsupervised_routes


def bad_app(**conf: object) -> Celery:
    app = Celery("badconf", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_store_url": "memory://", **conf})
    prismatic_celery.install(app, store=MemoryStore())
    return app


def test_an_unknown_key_names_the_close_matches_only() -> None:
    """A typo names its close matches, never the list of every setting."""
    app = bad_app(prismatic_hotspot_restart=3)
    with pytest.raises(ConfigurationError) as caught:
        prismatic_celery.runtime.get_runtime(app)
    message = str(caught.value)
    assert message.startswith("prismatic_hotspot_restart: unknown setting (did you mean 'prismatic_hotspot_restarts'")
    assert "prismatic_lessons_max" not in message and len(message) < 200
    assert sum(s.key in message for s in SETTINGS) <= 3


def test_an_unknown_key_far_from_any_setting_says_so() -> None:
    app = bad_app(prismatic_zzz=1)
    with pytest.raises(ConfigurationError, match=r"prismatic_zzz: unknown setting \(no known setting is close\)"):
        prismatic_celery.runtime.get_runtime(app)


def test_check_prints_the_message_once_and_exits_1(caplog: pytest.LogCaptureFixture) -> None:
    """`celery supervision check` on a bad setting: one line naming it, exit 1, nothing logged besides."""
    caplog.set_level(logging.DEBUG)
    app = bad_app(prismatic_domains={"core": {"strategy": "rest_for_on", "children": ["storage"]}})
    result = CliRunner().invoke(supervision, ["check"], obj=SimpleNamespace(app=app))
    assert result.exit_code == EXIT_ERROR
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.count("prismatic_domains.core.strategy") == 1
    assert not [r for r in caplog.records if "rest_for_on" in r.getMessage()], "reported once, by check itself"


def test_check_json_reports_the_bad_setting_typed() -> None:
    app = bad_app(prismatic_child_failure_rate=2)
    result = CliRunner().invoke(supervision, ["check", "--json"], obj=SimpleNamespace(app=app))
    assert result.exit_code == EXIT_ERROR
    assert '"setting": "prismatic_child_failure_rate"' in result.output and '"ok": false' in result.output


def test_a_producer_with_a_bad_configuration_refuses_to_send() -> None:
    """apply_async raises the ConfigurationError naming the setting; nothing reaches the broker."""
    app = bad_app(prismatic_shed_mode="parkk")

    @app.task(name="badconf.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ConfigurationError, match=r"prismatic_shed_mode: .*refused to send badconf.add"):
        add.apply_async((1, 2), queue="celery")
    # nothing was sent, not even the queue declared
    with app.connection_for_write() as conn, pytest.raises(Exception, match="NOT_FOUND"):
        conn.default_channel.queue_declare("celery", passive=True)


@pytest.mark.filterwarnings("ignore::celery.exceptions.CDeprecationWarning")  # the task's own queue=
def test_a_task_routed_to_a_queue_no_domain_declares_is_named_when_it_looks_supervised() -> None:
    """A typo of a supervised queue, or a child's tasks glob overridden by a route elsewhere, is reported;
    a task on the default queue is not."""
    app = Celery("routes", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_store_url="memory://", task_routes={"routes.typo": {"queue": "storge"},
                                                                  "routes.moved": {"queue": "elsewhere"}},
                    prismatic_domains={"core": {"children": ["storage", {"queue": "cache", "tasks": ["routes.mov*"]}]}})
    prismatic_celery.install(app, store=MemoryStore())

    @app.task(name="routes.typo", shared=False)
    def typo() -> None: ...

    @app.task(name="routes.moved", shared=False, queue="elsewhere")  # the task's own queue beats the globs' route
    def moved() -> None: ...

    @app.task(name="routes.plain", shared=False)
    def plain() -> None: ...

    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    found = unsupervised_routes(app, runtime)
    assert found == ["routes.moved -> elsewhere (its child's tasks globs name cache)",
                     "routes.typo -> storge (did you mean storage?)"]
