"""Every bad setting fails at start-up with one error naming the setting and what is allowed."""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery

from prismatic_celery import ConfigurationError, install
from prismatic_celery.config import Settings, load_settings
from prismatic_celery.config_table import RENAMED, SETTINGS, settings_table
from prismatic_celery.remediation.actions import RetryWithBackoff
from prismatic_celery.runtime import get_runtime
from prismatic_celery.store.memory import MemoryStore
from prismatic_celery.supervision.tree import RestartBudget, RestartType, Strategy

CORE = {"strategy": "rest_for_one", "children": ["storage", "cache"]}


def _load(**conf: Any) -> Settings:
    app = Celery("cfgtest", broker="memory://", set_as_current=False)
    app.conf.update(conf)
    return load_settings(app)


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("typo in a top-level key", {"prismatic_hotspot_restart": 3}, "prismatic_hotspot_restart", "did you mean"),
    ("enabled as a string", {"prismatic_enabled": "false"}, "prismatic_enabled", "true or false"),
    ("namespace with a colon", {"prismatic_namespace": "a:b"}, "prismatic_namespace", "':'"),
    ("namespace not a string", {"prismatic_namespace": 7}, "prismatic_namespace", "string"),
    ("store url with a foreign scheme", {"prismatic_store_url": "mysql://x"}, "prismatic_store_url", "redis://"),
    ("negative store timeout", {"prismatic_store_timeout_s": -1}, "prismatic_store_timeout_s", "> 0"),
    ("hotspot threshold zero", {"prismatic_hotspot_restarts": 0}, "prismatic_hotspot_restarts", ">= 1"),
    ("hotspot threshold a float", {"prismatic_hotspot_restarts": 2.5}, "prismatic_hotspot_restarts", "integer"),
    ("negative hotspot window", {"prismatic_hotspot_window_s": -300}, "prismatic_hotspot_window_s", "> 0"),
    ("infinite pause window", {"prismatic_pause_window_s": float("inf")}, "prismatic_pause_window_s", "finite"),
    ("reconcile interval a string", {"prismatic_reconcile_interval_s": "1s"}, "prismatic_reconcile_interval_s",
     "seconds"),
    ("backoff initial above max", {"prismatic_backoff_initial_s": 5, "prismatic_backoff_max_s": 0.1},
     "prismatic_backoff_initial_s", "must not exceed prismatic_backoff_max_s"),
    ("backoff initial above max in ms (old names)", {"prismatic_backoff_initial_ms": 5000,
                                                     "prismatic_backoff_max_ms": 100},
     "prismatic_backoff_initial_ms", "must not exceed prismatic_backoff_max_ms"),
    ("negative jitter", {"prismatic_backoff_jitter_s": -5}, "prismatic_backoff_jitter_s", ">= 0"),
    ("negative jitter in ms (old name)", {"prismatic_backoff_jitter_ms": -5}, "prismatic_backoff_jitter_ms", ">= 0"),
    ("zero initial backoff in ms (old name)", {"prismatic_backoff_initial_ms": 0}, "prismatic_backoff_initial_ms",
     "> 0"),
    ("backoff in ms as a float (old name)", {"prismatic_backoff_max_ms": 2.5}, "prismatic_backoff_max_ms", "integer"),
    ("backoff below a millisecond", {"prismatic_backoff_initial_s": 0.0002}, "prismatic_backoff_initial_s",
     "at least 0.001"),
    ("backoff as a string", {"prismatic_backoff_max_s": "30s"}, "prismatic_backoff_max_s", "seconds"),
    ("backoff set under both names", {"prismatic_backoff_initial_ms": 500, "prismatic_backoff_initial_s": 0.5},
     "prismatic_backoff_initial_ms", "set together with prismatic_backoff_initial_s"),
    ("backoff set under both names, upper case", {"PRISMATIC_BACKOFF_JITTER_MS": 5, "prismatic_backoff_jitter_s": 1},
     "prismatic_backoff_jitter_ms", "prismatic_backoff_jitter_s"),
    ("cool-down initial above max", {"prismatic_cooldown_initial_s": 600}, "prismatic_cooldown_initial_s",
     "must not exceed"),
    ("budget not a mapping", {"prismatic_domain_budget": 10}, "prismatic_domain_budget", "mapping"),
    ("budget missing its period", {"prismatic_domain_budget": {"max_restarts": 3}}, "prismatic_domain_budget.period_s",
     "required"),
    ("budget with negative restarts", {"prismatic_supervisor_budget": {"max_restarts": -1, "period_s": 5}},
     "prismatic_supervisor_budget.max_restarts", ">= 0"),
    ("budget with a typo", {"prismatic_domain_budget": {"max_restart": 3, "period_s": 5}},
     "prismatic_domain_budget.max_restart", "max_restarts"),
    ("domains not a mapping", {"prismatic_domains": ["core"]}, "prismatic_domains", "mapping"),
    ("unknown strategy", {"prismatic_domains": {"core": {"strategy": "one_for_none", "children": ["q"]}}},
     "prismatic_domains.core.strategy", "one_for_one, rest_for_one, one_for_all"),
    ("strategy close to a real one", {"prismatic_domains": {"core": {"strategy": "rest_for_on", "children": ["q"]}}},
     "prismatic_domains.core.strategy", "did you mean 'rest_for_one'"),
    ("domain without children", {"prismatic_domains": {"core": {"strategy": "one_for_one"}}},
     "prismatic_domains.core.children", "required"),
    ("domain with an empty child list", {"prismatic_domains": {"core": {"children": []}}},
     "prismatic_domains.core.children", "at least one"),
    ("children as a bare string", {"prismatic_domains": {"core": {"children": "storage"}}},
     "prismatic_domains.core.children", "list"),
    ("unknown domain key", {"prismatic_domains": {"core": {"children": ["q"], "stratgy": "one_for_all"}}},
     "prismatic_domains.core.stratgy", "did you mean 'strategy'"),
    ("queue declared twice in one domain", {"prismatic_domains": {"core": {"children": ["q", "q"]}}},
     "prismatic_domains.core.children", "declared twice"),
    ("queue declared in two domains", {"prismatic_domains": {"a": {"children": ["q"]}, "b": {"children": ["q"]}}},
     "prismatic_domains", "declared twice"),
    ("unknown restart type", {"prismatic_domains": {"core": {"children": [{"queue": "q", "restart": "forever"}]}}},
     "prismatic_domains.core.children[0].restart", "permanent, transient, temporary"),
    ("child without a queue", {"prismatic_domains": {"core": {"children": [{"restart": "transient"}]}}},
     "prismatic_domains.core.children[0].queue", "required"),
    ("child with an empty queue name", {"prismatic_domains": {"core": {"children": [""]}}},
     "prismatic_domains.core.children[0]", "empty"),
    ("normal exception that is not a class", {"prismatic_domains": {"core": {"children": [
        {"queue": "q", "restart": "transient", "normal_exceptions": ["os.path"]}]}}},
     "prismatic_domains.core.children[0].normal_exceptions[0]", "class"),
    ("normal exception that cannot be imported", {"prismatic_domains": {"core": {"children": [
        {"queue": "q", "normal_exceptions": ["nowhere.Missing"]}]}}},
     "prismatic_domains.core.children[0].normal_exceptions[0]", "cannot import"),
    ("task globs not strings", {"prismatic_domains": {"core": {"children": [{"queue": "q", "tasks": [1]}]}}},
     "prismatic_domains.core.children[0].tasks[0]", "string"),
    ("domain concurrency zero", {"prismatic_domains": {"core": {"children": ["q"], "concurrency": 0}}},
     "prismatic_domains.core.concurrency", ">= 1"),
    ("domain budget with zero period", {"prismatic_domains": {"core": {"children": ["q"],
                                                                       "budget": {"max_restarts": 1, "period_s": 0}}}},
     "prismatic_domains.core.budget.period_s", "> 0"),
    ("domain name with a colon", {"prismatic_domains": {"a:b": {"children": ["q"]}}}, "prismatic_domains.a:b", "':'"),
    ("upper-case key set twice", {"prismatic_enabled": True, "PRISMATIC_ENABLED": True}, "PRISMATIC_ENABLED",
     "set twice"),
]


@pytest.mark.filterwarnings("ignore:prismatic_backoff_:DeprecationWarning")  # the old names' warning: tested below
@pytest.mark.parametrize(("case", "conf", "setting", "hint"), BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_names_the_setting(case: str, conf: dict[str, Any], setting: str, hint: str) -> None:
    """The error's setting and message say what is wrong and what is allowed."""
    with pytest.raises(ConfigurationError) as raised:
        _load(**conf)
    assert raised.value.setting == setting, str(raised.value)
    assert hint in str(raised.value)
    assert str(raised.value).startswith(setting)


def test_defaults_load_from_an_empty_configuration() -> None:
    """With no prismatic_* setting at all, every default applies and the tree is empty."""
    settings = _load()
    assert settings.enabled is True
    assert settings.namespace == "cfgtest"
    assert settings.store_url == "memory://"
    assert settings.supervisor.domain_list == ()
    assert settings.supervisor.domain_budget == RestartBudget(10, 60.0)
    assert (settings.child_failure_rate, settings.child_min_executions, settings.child_window_s) == (0.5, 20, 10.0)
    assert settings.supervisor.budget == RestartBudget(3, 300.0)
    assert settings.hotspot_restarts == 3 and settings.hotspot_window_s == 300.0
    assert (settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_jitter_s) == (1.0, 30.0, 1.0)


def test_backoff_settings_are_seconds() -> None:
    """The default re-run backoff is set in seconds (floats, ints or timedeltas); no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = _load(prismatic_backoff_initial_s=0.3, prismatic_backoff_max_s=2,
                         prismatic_backoff_jitter_s=timedelta(milliseconds=100))
        zero_jitter = _load(prismatic_backoff_jitter_s=0)
    assert (settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_jitter_s) == (0.3, 2.0, 0.1)
    assert zero_jitter.backoff_jitter_s == 0.0


def test_the_old_ms_names_are_converted_with_a_deprecation_warning(caplog: pytest.LogCaptureFixture) -> None:
    """``prismatic_backoff_*_ms`` still work, converted to seconds; each warns (DeprecationWarning and a log
    line) naming its new setting."""
    for name in ("initial", "max", "jitter"):
        assert RENAMED[f"prismatic_backoff_{name}_ms"] == (f"prismatic_backoff_{name}_s", 1000)
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"), \
            pytest.warns(DeprecationWarning) as warned:
        settings = _load(prismatic_backoff_initial_ms=300, PRISMATIC_BACKOFF_MAX_MS=2000,
                         prismatic_backoff_jitter_ms=0)
    assert (settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_jitter_s) == (0.3, 2.0, 0.0)
    assert sorted(str(w.message) for w in warned) == [
        "prismatic_backoff_initial_ms is deprecated: set prismatic_backoff_initial_s = 0.3 instead",
        "prismatic_backoff_jitter_ms is deprecated: set prismatic_backoff_jitter_s = 0.0 instead",
        "prismatic_backoff_max_ms is deprecated: set prismatic_backoff_max_s = 2.0 instead",
    ]
    logged = sorted(r.getMessage() for r in caplog.records if "setting-deprecated" in r.getMessage())
    assert logged == [
        "event=setting-deprecated setting=prismatic_backoff_initial_ms use=prismatic_backoff_initial_s value=0.3",
        "event=setting-deprecated setting=prismatic_backoff_jitter_ms use=prismatic_backoff_jitter_s value=0.0",
        "event=setting-deprecated setting=prismatic_backoff_max_ms use=prismatic_backoff_max_s value=2.0",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "setting-deprecated" in r.getMessage())


@pytest.mark.filterwarnings("ignore:prismatic_backoff_:DeprecationWarning")
def test_old_and_new_names_give_the_engine_the_same_backoff() -> None:
    """What the engine re-runs with is in milliseconds either way: the seconds are not rounded away."""
    backoffs = []
    for conf in ({"prismatic_backoff_initial_ms": 250, "prismatic_backoff_max_ms": 1500,
                  "prismatic_backoff_jitter_ms": 7},
                 {"prismatic_backoff_initial_s": 0.25, "prismatic_backoff_max_s": 1.5,
                  "prismatic_backoff_jitter_s": 0.007}):
        app = Celery("backoff", broker="memory://", set_as_current=False)
        app.conf.update(conf)
        install(app, store=MemoryStore())
        runtime = get_runtime(app)
        assert runtime is not None
        backoffs.append(runtime.engine.backoff)
    assert backoffs == [RetryWithBackoff(initial_ms=250, max_ms=1500, jitter_ms=7)] * 2


def test_store_defaults_to_a_redis_result_backend_then_a_redis_broker() -> None:
    """The store is the result backend when it is Redis, else the broker when it is Redis."""
    app = Celery("x", broker="redis://127.0.0.1:6379/3", set_as_current=False)
    assert load_settings(app).store_url == "redis://127.0.0.1:6379/3"
    both = Celery("x", broker="redis://127.0.0.1:6379/3", backend="redis://127.0.0.1:6379/4", set_as_current=False)
    assert load_settings(both).store_url == "redis://127.0.0.1:6379/4"
    rabbit = Celery("x", broker="amqp://guest@127.0.0.1//", backend="rediss://:pw@cache:6380/1", set_as_current=False)
    assert load_settings(rabbit).store_url == "rediss://:pw@cache:6380/1"


@pytest.mark.parametrize("backend", [None, "db+postgresql://u:secret@db/results", "rpc://"])
def test_without_a_redis_to_share_the_store_url_must_be_set(backend: str | None) -> None:
    """A RabbitMQ broker and no Redis result backend: no silent per-process store; one line naming the setting
    (the URLs it looked at, passwords masked); memory:// asked for explicitly is accepted."""
    app = Celery("x", broker="amqp://guest:secret@127.0.0.1:5672//", backend=backend, set_as_current=False)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(app)
    message = str(raised.value)
    assert raised.value.setting == "prismatic_store_url" and "\n" not in message and "secret" not in message
    assert "amqp://guest:***@127.0.0.1:5672//" in message and "memory://" in message
    app.conf.prismatic_store_url = "memory://"
    assert load_settings(app).store_url == "memory://"


def test_a_full_tree_is_parsed_in_declaration_order() -> None:
    """Domains and children keep declaration order, strategies, restart types and budgets."""
    settings = _load(
        prismatic_domains={
            "core": {**CORE, "budget": {"max_restarts": 4, "period_s": timedelta(seconds=30)}, "concurrency": 2},
            "osint": {"children": [{"queue": "sources", "restart": "transient", "tasks": ["osint.*"],
                                    "normal_exceptions": ["KeyError"]}]},
        },
        PRISMATIC_HOTSPOT_RESTARTS=5,
    )
    tree = settings.supervisor
    assert [d.name for d in tree.domain_list] == ["core", "osint"]
    core = tree.domain("core")
    assert core.strategy is Strategy.REST_FOR_ONE and core.queues == ("storage", "cache")
    assert tree.budget_for(core) == RestartBudget(4, 30.0) and core.concurrency == 2
    assert [c.queue for c in core.children_after("storage")] == ["cache"]
    osint = tree.domain("osint")
    assert tree.budget_for(osint) == RestartBudget(10, 60.0)
    child = osint.child_list[0]
    assert child.restart is RestartType.TRANSIENT and child.normal_exceptions == (KeyError,)
    assert tree.route("osint.fetch") == "sources" and tree.route("other") is None
    assert tree.locate("cache") == (core, core.child_list[1]) and tree.locate("nope") is None
    assert settings.hotspot_restarts == 5


def test_every_setting_is_documented_in_the_readme() -> None:
    """The README's settings table lists every setting the code knows."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.key}`" in readme, setting.key
    assert settings_table().splitlines()[0] in readme
