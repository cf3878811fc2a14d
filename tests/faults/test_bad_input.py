"""Bad input of every kind: configuration, task arguments, exception messages, corrupted or foreign
keys, hostile replay requests.

Each case gives a clear error (naming the setting, or saying why) or is skipped with a
warning; nothing crashes, nothing is lost, and no secret reaches Redis or a plugin log line.
Driven through the public API (``get_runtime``, ``runtime.dlq``, ``runtime.learning``), the
``celery supervision`` CLI (click's CliRunner) and real workers.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

import prismatic_celery
from prismatic_celery import ConfigurationError
from prismatic_celery.cli.main import supervision
from prismatic_celery.remediation.dlq import dead_letter_entry
from prismatic_celery.runtime import Runtime, get_runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import wait_for
from tests.faults import corrupt
from tests.faults.apps import LEAK_KINDS, SECRETS
from tests.faults.conftest import (
    LOG_CONF,
    cli,
    dump_namespace,
    exercise_readers,
    faults_env,
    faults_runtime,
    log_records,
    no_crash,
    plugin_log,
    worker,
)

TREE = {"core": {"strategy": "rest_for_one", "children": ["storage", "cache"]},
        "osint": {"children": [{"queue": "sources", "restart": "transient", "normal_exceptions": ["KeyError"]}]}}


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A client that reads bytes (hostile values need not be UTF-8)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# ------------------------------------------------------------------------------------------------
# configuration: cases tests/test_config.py does not have, validated the way a worker boots
# ------------------------------------------------------------------------------------------------
CONFIG: list[tuple[str, dict[str, Any], str, str]] = [
    ("store url with an http scheme", {"prismatic_store_url": "http://127.0.0.1:6379"}, "prismatic_store_url",
     "not supported"),
    ("store url empty", {"prismatic_store_url": ""}, "prismatic_store_url", "empty"),
    ("store url a number", {"prismatic_store_url": 6379}, "prismatic_store_url", "string"),
    ("store url of a database with a password", {"prismatic_store_url": "mysql://u:pw@h"}, "prismatic_store_url",
     "not supported"),
    ("store timeout zero", {"prismatic_store_timeout_s": 0}, "prismatic_store_timeout_s", "> 0"),
    ("store retry NaN", {"prismatic_store_retry_s": float("nan")}, "prismatic_store_retry_s", "finite"),
    ("store retry a string", {"prismatic_store_retry_s": "1"}, "prismatic_store_retry_s", "seconds"),
    ("negative timedelta", {"prismatic_pause_window_s": datetime.timedelta(seconds=-3)}, "prismatic_pause_window_s",
     "> 0"),
    ("budget restarts a bool", {"prismatic_domain_budget": {"max_restarts": True, "period_s": 1}},
     "prismatic_domain_budget.max_restarts", "integer"),
    ("budget period a string", {"prismatic_supervisor_budget": {"max_restarts": 1, "period_s": "60"}},
     "prismatic_supervisor_budget.period_s", "seconds"),
    ("hotspot threshold a bool", {"prismatic_hotspot_restarts": True}, "prismatic_hotspot_restarts", "integer"),
    ("negative restarts per message", {"prismatic_max_restarts_per_message": -1},
     "prismatic_max_restarts_per_message", ">= 0"),
    ("quarantine after zero deliveries", {"prismatic_quarantine_deliveries": 0}, "prismatic_quarantine_deliveries",
     ">= 1"),
    ("dead-letter cap zero", {"prismatic_dlq_max": 0}, "prismatic_dlq_max", ">= 1"),
    ("success rate above one", {"prismatic_lesson_min_success_rate": 1.5}, "prismatic_lesson_min_success_rate",
     "0 to 1"),
    ("success rate a bool", {"prismatic_lesson_min_success_rate": True}, "prismatic_lesson_min_success_rate",
     "0 to 1"),
    ("lessons cap zero", {"prismatic_lessons_max": 0}, "prismatic_lessons_max", ">= 1"),
    ("lessons switch a string", {"prismatic_lessons": "yes"}, "prismatic_lessons", "true or false"),
    ("event stream cap zero", {"prismatic_event_stream_maxlen": 0}, "prismatic_event_stream_maxlen", ">= 1"),
    ("negative circuit cache", {"prismatic_circuit_cache_s": -1}, "prismatic_circuit_cache_s", ">= 0"),
    ("circuit fail_max zero", {"prismatic_circuits": {"dep": {"fail_max": 0}}}, "prismatic_circuits.dep.fail_max",
     ">= 1"),
    ("circuit negative reset", {"prismatic_circuits": {"dep": {"reset_timeout_s": -1}}},
     "prismatic_circuits.dep.reset_timeout_s", "> 0"),
    ("circuits as a list", {"prismatic_circuits": ["dep"]}, "prismatic_circuits", "mapping"),
    ("circuit key typo", {"prismatic_circuits": {"dep": {"fail_mx": 3}}}, "prismatic_circuits.dep.fail_mx",
     "did you mean 'fail_max'"),
    ("circuit exclude not importable", {"prismatic_circuits": {"dep": {"exclude": ["nowhere.Nope"]}}},
     "prismatic_circuits.dep.exclude[0]", "cannot import"),
    ("circuit strict a string", {"prismatic_circuits": {"dep": {"strict": "yes"}}}, "prismatic_circuits.dep.strict",
     "true or false"),
    ("rule with an unregistered action", {"prismatic_remediation_rules": [{"match": {}, "action": "explode"}]},
     "prismatic_remediation_rules[0].action", "not allowed"),
    ("rule with a negative backoff", {"prismatic_remediation_rules": [{"match": {}, "action": {
        "action": "retry_with_backoff", "initial_ms": -5, "max_ms": 10}}]},
     "prismatic_remediation_rules[0].action.initial_ms", ">= 1"),
    ("rules as a mapping", {"prismatic_remediation_rules": {"a": 1}}, "prismatic_remediation_rules", "list"),
    ("rule with a broken regex", {"prismatic_remediation_rules": [{"match": {"message": "("},
                                                                    "action": "dead_letter"}]},
     "prismatic_remediation_rules[0].match.message", "regular expression"),
    ("circuit_break without a target", {"prismatic_remediation_rules": [{"match": {}, "action": {
        "action": "circuit_break", "duration_ms": 10}}]}, "prismatic_remediation_rules[0].action.target", "required"),
    ("rule match key typo", {"prismatic_remediation_rules": [{"match": {"exception": ["KeyError"]},
                                                              "action": "dead_letter"}]},
     "prismatic_remediation_rules[0].match.exception", "did you mean 'exceptions'"),
    ("rule action parameter typo", {"prismatic_remediation_rules": [{"match": {}, "action": {
        "action": "retry_with_backoff", "initial": 5}}]}, "prismatic_remediation_rules[0].action.initial",
     "did you mean 'initial_ms'"),
    ("rule with an unknown failure class", {"prismatic_remediation_rules": [{"match": {"failure_class": "cosmic"},
                                                                             "action": "dead_letter"}]},
     "prismatic_remediation_rules[0].match.failure_class", "not allowed"),
    ("rule without an action", {"prismatic_remediation_rules": [{"match": {}}]},
     "prismatic_remediation_rules[0].action", "required"),
    ("class override to an unknown class", {"prismatic_failure_class_overrides": {"ValueError": "cosmic_rays"}},
     "prismatic_failure_class_overrides", "not allowed"),
    ("class overrides as a list", {"prismatic_failure_class_overrides": ["ValueError"]},
     "prismatic_failure_class_overrides", "mapping"),
    ("in-app modules a number", {"prismatic_in_app_modules": 5}, "prismatic_in_app_modules", "list of strings"),
    ("in-app module empty", {"prismatic_in_app_modules": [""]}, "prismatic_in_app_modules[0]", "empty"),
    ("send events as 1", {"prismatic_send_events": 1}, "prismatic_send_events", "true or false"),
    ("log json a string", {"prismatic_log_json": "yes"}, "prismatic_log_json", "true or false"),
    ("master switch as 0", {"prismatic_enabled": 0}, "prismatic_enabled", "true or false"),
    ("unknown shed mode", {"prismatic_shed_mode": "burn"}, "prismatic_shed_mode", "not allowed"),
    ("shed cutoff 11", {"prismatic_shed_cutoff": 11}, "prismatic_shed_cutoff", "0 to 10"),
    ("shed threshold zero", {"prismatic_shed_threshold": 0}, "prismatic_shed_threshold", ">= 1"),
    ("shed resume above the threshold", {"prismatic_shed_threshold": 100, "prismatic_shed_resume_below": 200},
     "prismatic_shed_resume_below", "must not exceed"),
    ("shed override key typo", {"prismatic_shed_queues": {"cache": {"treshold": 5}}},
     "prismatic_shed_queues.cache.treshold", "did you mean 'threshold'"),
    ("shed override of an unsupervised queue", {"prismatic_shed_queues": {"nope": {"threshold": 5}}},
     "prismatic_shed_queues.nope", "not a supervised queue"),
    ("namespace empty", {"prismatic_namespace": ""}, "prismatic_namespace", "empty"),
    ("namespace with a glob", {"prismatic_namespace": "ns*"}, "prismatic_namespace", "glob"),
    ("namespace with a space", {"prismatic_namespace": "my app"}, "prismatic_namespace", "whitespace"),
    ("namespace with a newline", {"prismatic_namespace": "a\nb"}, "prismatic_namespace", "whitespace"),
    ("bulkhead lease zero", {"prismatic_bulkhead_lease_s": 0}, "prismatic_bulkhead_lease_s", "> 0"),
    ("bulkhead defer a word", {"prismatic_bulkhead_defer_s": "soon"}, "prismatic_bulkhead_defer_s", "seconds"),
    ("child key typo", {"prismatic_domains": {"core": {"children": [{"queue": "q", "restrt": "transient"}]}}},
     "prismatic_domains.core.children[0].restrt", "did you mean 'restart'"),
    ("child given as a number", {"prismatic_domains": {"core": {"children": [7]}}},
     "prismatic_domains.core.children[0]", "mapping"),
    ("child given as None", {"prismatic_domains": {"core": {"children": [None]}}},
     "prismatic_domains.core.children[0]", "mapping"),
    ("concurrency a string", {"prismatic_domains": {"core": {"children": ["q"], "concurrency": "4"}}},
     "prismatic_domains.core.concurrency", "integer"),
    ("normal exception that is not an exception", {"prismatic_domains": {"core": {"children": [
        {"queue": "q", "restart": "transient", "normal_exceptions": ["builtins.int"]}]}}},
     "prismatic_domains.core.children[0].normal_exceptions[0]", "BaseException"),
    ("domain names not strings", {"prismatic_domains": {1: {"children": ["q"]}}}, "prismatic_domains",
     "keys must be strings"),
    ("cluster concurrency zero", {"prismatic_domains": {"core": {"children": ["q"], "cluster_concurrency": 0}}},
     "prismatic_domains.core.cluster_concurrency", ">= 1"),
]


def _validate(conf: dict[str, Any]) -> Runtime | None:
    """What a worker does at boot: install, configure, build the runtime."""
    app = Celery("badcfg", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_domains": TREE, "prismatic_store_url": "memory://", **conf})
    prismatic_celery.install(app)
    return get_runtime(app)


@pytest.mark.parametrize(("case", "conf", "setting", "hint"), CONFIG, ids=[c[0] for c in CONFIG])
def test_bad_configuration_fails_at_start_naming_the_setting(case: str, conf: dict[str, Any], setting: str,
                                                             hint: str) -> None:
    """One ConfigurationError naming the setting and saying what is wrong."""
    with pytest.raises(ConfigurationError) as raised:
        _validate(conf)
    assert raised.value.setting.startswith(setting), str(raised.value)
    assert hint in str(raised.value), str(raised.value)


def test_a_rule_for_an_undeclared_domain_fails_at_start() -> None:
    """A rule matching domain 'nope' in a tree without it is a typo, like an unknown setting."""
    with pytest.raises(ConfigurationError) as raised:
        _validate({"prismatic_remediation_rules": [{"match": {"domain": "nope"}, "action": "dead_letter"}]})
    assert raised.value.setting.startswith("prismatic_remediation_rules[0].match.domain")


def test_an_empty_domain_name_fails_naming_prismatic_domains() -> None:
    """The empty domain name is reported under prismatic_domains, like every other bad tree."""
    with pytest.raises(ConfigurationError) as raised:
        _validate({"prismatic_domains": {"": {"children": ["q"]}}})
    assert raised.value.setting.startswith("prismatic_domains"), str(raised.value)


@pytest.mark.parametrize("conf", [
    {"prismatic_store_url": "http://x"},
    {"prismatic_circuits": {"dep": {"fail_mx": 3}}},
    {"prismatic_remediation_rules": [{"match": {"message": "("}, "action": "dead_letter"}]},
    {"prismatic_namespace": "ns*"},
], ids=["store-url", "circuit-typo", "rule-regex", "namespace"])
def test_supervision_check_exits_1_naming_the_setting(conf: dict[str, Any]) -> None:
    """`celery supervision check` reports the bad setting with exit code 1, no traceback."""
    app = Celery("badcli", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_domains": TREE, "prismatic_store_url": "memory://", **conf})
    prismatic_celery.install(app)
    result = cli(app, "check")
    no_crash(result, 1)
    assert "invalid configuration: " + next(iter(conf)) in result.output
    assert "Traceback" not in result.output


def test_the_cli_without_an_installed_app_says_so() -> None:
    """Not installed, or no app at all: a one-line error, never a traceback."""
    bare = Celery("bare", broker="memory://", set_as_current=False)
    for args in (["status"], ["dlq", "list", "core"], ["lessons"], ["health"]):
        result = cli(bare, *args)
        no_crash(result, 1)
        assert "not installed" in result.output
    result = CliRunner().invoke(supervision, ["status"], obj=object())
    no_crash(result, 2)
    assert "celery -A proj supervision" in result.output


@pytest.mark.integration
def test_a_worker_with_a_bad_rule_stops_at_start_naming_it(redis_url: str, namespace: str) -> None:
    """A real `celery worker` refuses to start, naming the rule's bad field."""
    conf = {"prismatic_remediation_rules": [{"match": {"message": "("}, "action": "dead_letter"}]}
    w = worker(namespace, faults_env(redis_url, namespace, redis_url, conf=conf), name="badrule", pool="solo")
    w.start()
    assert w.proc is not None
    assert w.proc.wait(60) != 0
    assert "prismatic_remediation_rules[0].match.message" in w.log


# ------------------------------------------------------------------------------------------------
# exception messages: huge, bytes, non-UTF-8, control characters, secrets (real worker)
# ------------------------------------------------------------------------------------------------
LEAK_CONF = {**LOG_CONF, "prismatic_max_restarts_per_message": 1, "prismatic_backoff_initial_s": 0.05,
             "prismatic_backoff_max_s": 0.05, "prismatic_backoff_jitter_s": 0,
             "prismatic_domain_budget": {"max_restarts": 1000, "period_s": 60}}


@pytest.mark.integration
def test_hostile_exception_messages_are_bounded_and_no_secret_reaches_redis_or_plugin_logs(
    redis_url: str, namespace: str, ledger: redis.Redis, raw: redis.Redis
) -> None:
    """15 hostile messages x (escalated, retried then exhausted): dead letters, lessons, events, logs clean."""
    app, runtime = faults_runtime(redis_url, namespace, **LEAK_CONF)
    leak = app.tasks["faults.leak"]
    with worker(namespace, faults_env(redis_url, namespace, redis_url, store=redis_url, conf=LEAK_CONF),
                name="leak") as w:
        w.wait_ready(app)
        sent = {(kind, exc): leak.apply_async((kind, exc), queue="cache")
                for kind in LEAK_KINDS for exc in ("LookupError", "ConnectionError")}
        for result in sent.values():
            result.get(timeout=60, propagate=False)
            assert result.state == "FAILURE"
        wait_for(lambda: runtime.dlq.count("core") == len(sent), timeout_s=20, message="every crash dead-lettered")
        log = w.log
    letters = {letter["id"]: letter for letter in runtime.dlq.list("core", limit=100)}
    for (kind, exc), result in sent.items():
        letter = letters[result.id]
        assert letter["exception"] == exc and letter["task"] == "faults.leak", (kind, exc)
        expected = "escalated: unknown_failure_pattern" if exc == "LookupError" else "restarts_exhausted"
        assert letter["reason"] == expected, (kind, exc, letter["reason"])
        assert len(letter["message"]) <= 2000 and len(letter["traceback"]) <= 8000, kind
        assert not any(ord(c) < 32 and c not in "\n\t" for c in letter["message"] + letter["traceback"]), kind
        assert "\u202e" not in letter["message"], "bidirectional override removed"
        assert letter["replayable"] is True
    assert int(ledger.get("leaks:huge:ConnectionError") or 0) == 2, "the retried one ran twice (one restart)"
    lessons = runtime.learning.lessons.all(limit=0) if runtime.learning else []
    assert lessons and all(len(lesson.message) <= 2000 for lesson in lessons)
    stored = dump_namespace(redis.Redis.from_url(redis_url, decode_responses=True, encoding_errors="replace"),
                            namespace)
    assert stored, "the namespace holds the dead letters, lessons, events and counters"
    leaked = {(secret, name) for name, value in stored.items() for secret in SECRETS if secret in value}
    assert not leaked, f"secrets stored in the namespace: {sorted(leaked)}"
    ours = plugin_log(log)
    assert "supervision-dead-letter" in ours and "supervision-escalation" in ours
    leaked_log = [secret for secret in SECRETS if secret in ours]
    assert not leaked_log, f"secrets in the plugin's log lines: {leaked_log}"
    celery_lines = [record for name, record in log_records(log) if not name.startswith("prismatic_celery")]
    in_celery = sorted({secret for secret in SECRETS for record in celery_lines if secret in record})
    outside = sorted({raw_key.decode(errors="replace") for raw_key in raw.scan_iter(count=1000)
                      if not raw_key.startswith(f"{Keys(namespace).head}:".encode())
                      and any(secret.encode() in (raw.get(raw_key) or b"") for secret in SECRETS
                              if raw.type(raw_key) == b"string")})
    print(f"\n{len(sent)} hostile crashes: no secret in {len(stored)} namespace keys nor in the plugin's "
          f"{len(ours.splitlines())} log lines. Celery's own log lines carry {len(in_celery)} of the "
          f"{len(SECRETS)} secrets; keys outside the namespace holding one: {len(outside)} "
          f"(e.g. {outside[:1]}) - Celery's result backend, not the plugin")


@pytest.mark.integration
def test_an_unprintable_exception_is_still_supervised(redis_url: str, namespace: str) -> None:
    """__str__ and __repr__ both raise: the crash is still escalated and its message kept in the dead-letter queue."""
    app, runtime = faults_runtime(redis_url, namespace, **LEAK_CONF)
    with worker(namespace, faults_env(redis_url, namespace, redis_url, store=redis_url, conf=LEAK_CONF),
                name="unprintable", pool="solo") as w:
        w.wait_ready(app)
        result = app.tasks["faults.leak"].apply_async(("unprintable",), queue="cache")
        result.get(timeout=30, propagate=False)
        assert "supervision-hook-failed" not in w.log
        wait_for(lambda: runtime.dlq.get("core", result.id) is not None, timeout_s=5, message="dead letter")


# ------------------------------------------------------------------------------------------------
# task arguments the plugin stores (real worker): non-JSON types, huge, NaN, unicode
# ------------------------------------------------------------------------------------------------
ARGS: dict[str, tuple[tuple[Any, ...], dict[str, Any], bool]] = {
    "datetime": ((datetime.datetime(2024, 1, 2, 3, 4, 5),), {}, False),
    "uuid": ((uuid.UUID(int=7),), {}, False),
    "decimal": ((decimal.Decimal("1.10"),), {}, False),
    "bytes": ((b"\x00\xff binary",), {}, False),
    "huge": (("x" * 1_000_000,), {}, True),
    "nan": (("n", float("nan"), float("inf")), {}, True),
    "nested": (({"a": [{"b": [1, 2, {"c": None}]}]},), {"deep": [[[[["x"]]]]]}, True),
    "unicode": (("日本語 🎉 \u202e reversed",), {"ü key": 1, "with space": 2}, True),
    "empty": ((), {}, True),
}


@pytest.mark.integration
def test_arguments_reach_the_dead_letter_queue_and_replay_only_when_they_can(
    redis_url: str, namespace: str, ledger: redis.Redis
) -> None:
    """Non-JSON arguments: kept as repr with replayable False, replay refused with a clear error and the entry
    kept; JSON arguments (even 1 MB, NaN, unicode): replayed exactly once with the same arguments."""
    app, runtime = faults_runtime(redis_url, namespace, **LOG_CONF)
    reject = app.tasks["faults.reject"]
    with worker(namespace, faults_env(redis_url, namespace, redis_url, store=redis_url, conf=LOG_CONF), name="args",
                pool="solo") as w:
        w.wait_ready(app)
        sent = {name: reject.apply_async((name, *args), kwargs, queue="cache") for name, (args, kwargs, _) in
                ARGS.items()}
        for result in sent.values():
            result.get(timeout=30, propagate=False)
        wait_for(lambda: runtime.dlq.count("core") == len(ARGS), timeout_s=10, message="all dead-lettered")
        ledger.set("fixed", "1")
        for name, (_, _, replayable) in ARGS.items():
            task_id = sent[name].id
            letter = runtime.dlq.get("core", task_id)
            assert letter is not None and letter["replayable"] is replayable, name
            if not replayable:
                assert isinstance(letter["args"], str), "non-JSON arguments are kept as their repr"
                with pytest.raises(ValueError, match="cannot be replayed"):
                    runtime.dlq.replay(app, "core", task_id)
                refused = cli(app, "dlq", "replay", "core", task_id)
                no_crash(refused, 1)
                assert "cannot be replayed" in refused.output
                assert runtime.dlq.get("core", task_id) is not None, "a refused replay keeps the entry"
                continue
            assert runtime.dlq.replay(app, "core", task_id) == task_id
            assert runtime.dlq.replay(app, "core", task_id) is None, "a second replay finds nothing"
        replayed = [name for name, (_, _, ok) in ARGS.items() if ok]
        wait_for(lambda: all(ledger.get(f"runs:{name}") for name in replayed), timeout_s=30,
                 message="replayed letters ran")
        for name in replayed:
            args, kwargs, _ = ARGS[name]
            assert ledger.get(f"runs:{name}") == "1", name
            received = json.loads(ledger.get(f"received:{name}") or "{}")
            assert received["args"] == len(args) and received["kwargs"] == sorted(kwargs), name
        assert json.loads(ledger.get("received:huge") or "{}")["first_len"] == 1_000_000
        assert runtime.dlq.count("core") == sum(1 for _, _, ok in ARGS.values() if not ok)
        ours = plugin_log(w.log)
        assert "supervision-dead-letter" in ours and "Traceback" not in ours


@pytest.mark.integration
def test_a_dead_letter_with_a_lone_surrogate_can_be_replayed(redis_url: str, namespace: str) -> None:
    """An entry Redis's cjson cannot decode (a lone surrogate escape, valid JSON for Python) is still replayable."""
    app, runtime = faults_runtime(redis_url, namespace)
    runtime.dlq.push(dead_letter_entry(task="faults.accept", task_id="sur", args=["k\udcff"], kwargs={},
                                       queue="cache", domain="core", reason="test"))
    assert runtime.dlq.get("core", "sur") is not None
    assert runtime.dlq.replay(app, "core", "sur") == "sur"


# ------------------------------------------------------------------------------------------------
# hostile replay requests
# ------------------------------------------------------------------------------------------------
def _letter(task_id: str, task: str = "faults.accept", **fields: Any) -> dict[str, Any]:
    entry = dead_letter_entry(task=task, task_id=task_id, args=[task_id], kwargs={}, queue="cache", domain="core",
                              reason="test")
    entry.update(fields)
    return entry


@pytest.mark.integration
def test_hostile_replay_requests_get_clear_answers_and_lose_nothing(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    """Unknown ids, ids of another domain, replays twice and concurrently, garbage entries, unknown domains."""
    app, runtime = faults_runtime(redis_url, namespace)
    dlq = runtime.dlq
    for task_id in ("a", "b", "race"):
        dlq.push(_letter(task_id))
    dlq.push(_letter("o", domain="osint", queue="sources"))
    key = Keys(namespace).key("dlq", "core")
    raw.rpush(key, b"{not json", b"\xff\xfe", b"[]", b'{"no": "id"}', b'{"id": 5}')

    assert dlq.replay(app, "core", "no-such-id") is None
    assert dlq.replay(app, "osint", "a") is None and dlq.get("core", "a") is not None, "another domain's id"
    assert dlq.replay(app, "core", "o") is None and dlq.get("osint", "o") is not None
    assert dlq.replay(app, "core", "5") is None, "an id stored as a number is not matched as a string"
    assert [e["id"] for e in dlq.list("core")] == ["a", "b", "race"], "garbage entries are skipped"

    winners: list[str | None] = []
    barrier = threading.Barrier(8)

    def replay() -> None:
        barrier.wait()
        winners.append(dlq.replay(app, "core", "race"))

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert winners.count("race") == 1 and winners.count(None) == 7, f"exactly one concurrent replay: {winners}"
    assert raw.llen("cache") == 1, "published once"

    for args, code, text in (
        (["dlq", "replay", "core", "no-such-id"], 1, "no dead letter no-such-id in core"),
        (["dlq", "replay", "nodomain", "a"], 1, "nodomain"),
        (["dlq", "show", "core", "no-such-id"], 1, "no dead letter"),
        (["dlq", "replay", "core"], 2, "TASK_IDS or pass --all"),
        (["dlq", "list", "core"], 0, "\na   faults.accept"),
        (["dlq", "show", "core", "b"], 0, '"id": "b"'),
    ):
        result = cli(app, *args)
        no_crash(result, code)
        assert text in result.output, (args, result.output)
    result = cli(app, "dlq", "replay", "core", "a", "a")
    no_crash(result, 1)
    assert "replayed a" in result.output and "no dead letter a in core" in result.output, "twice: once"
    assert raw.llen("cache") == 2
    result = cli(app, "dlq", "purge", "core", "--yes")
    no_crash(result, 0)
    assert dlq.count("core") == 0 and dlq.get("osint", "o") is not None, "purge touches one domain only"


@pytest.mark.integration
def test_replaying_a_dead_letter_of_an_unknown_task_is_refused_and_kept(redis_url: str, namespace: str) -> None:
    """A task no worker knows would be discarded as unregistered: replay refuses it and keeps the entry."""
    app, runtime = faults_runtime(redis_url, namespace)
    runtime.dlq.push(_letter("ghost", task="no.such.task"))
    with pytest.raises(ValueError):
        runtime.dlq.replay(app, "core", "ghost")
    assert runtime.dlq.get("core", "ghost") is not None


@pytest.mark.integration
def test_a_dead_letter_with_malformed_arguments_is_refused_and_kept(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    """A hand-corrupted entry whose args are a string is refused (not published one character per argument)."""
    app, runtime = faults_runtime(redis_url, namespace)
    runtime.dlq.push(_letter("shape", args="abc"))
    with pytest.raises(ValueError):
        runtime.dlq.replay(app, "core", "shape")
    assert runtime.dlq.get("core", "shape") is not None
    assert raw.llen("cache") == 0


@pytest.mark.integration
# ------------------------------------------------------------------------------------------------
# corrupted and foreign keys
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["wrong-types", "garbage"])
def test_corrupted_keys_are_skipped_with_a_warning_by_every_reader(
    redis_url: str, namespace: str, raw: redis.Redis, variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every key kind holding another type, or garbage of the right type: API and CLI answer, warn, never crash."""
    app, runtime = faults_runtime(redis_url, namespace)
    planted = (corrupt.plant_wrong_types if variant == "wrong-types" else corrupt.plant_garbage)(raw, namespace)
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        exercise_readers(app, runtime)
        runtime.learning.lessons.import_([{"fingerprint": "x"}, "junk", None, {"fingerprint": "a:b*"}])  # type: ignore[union-attr]
    warned = {getattr(r, "supervision", {}).get("event") for r in caplog.records}
    expected = {"store-command-refused"} if variant == "wrong-types" else {"store-corrupt-value"}
    assert expected <= warned, warned
    assert "lesson-import-skipped" in warned
    if variant == "garbage":  # right types holding garbage: new data is still recorded and readable beside it
        runtime.dlq.push(_letter("fresh", domain="evo", queue="mendel"))
        assert [e["id"] for e in runtime.dlq.list("evo")] == ["half-entry", "fresh"], "garbage entries skipped"
        assert runtime.learning is not None
        lesson = runtime.learning.lessons.record_crash("deadbeefdeadbeef", task="t", failure_class="logic_error",
                                                       exc_type="KeyError", message="boom")
        assert lesson.count == 1 and runtime.learning.lessons.get("deadbeefdeadbeef") == lesson, "corrupt replaced"
        assert "lesson-corrupt" in {getattr(r, "supervision", {}).get("event") for r in caplog.records}
    assert all(raw.exists(name) for name in planted if ":dlq:" in name), "corrupt dead-letter lists are left alone"


@pytest.mark.integration
def test_a_worker_keeps_working_over_corrupted_and_foreign_keys(
    redis_url: str, namespace: str, raw: redis.Redis, ledger: redis.Redis
) -> None:
    """Garbage at every key kind of the namespace, and pauses under a foreign namespace: every task runs once,
    a crash is still re-run, a poison message still quarantined, foreign keys untouched."""
    conf = {**LOG_CONF, "task_reject_on_worker_lost": True, "prismatic_backoff_initial_s": 0.1,
            "prismatic_backoff_max_s": 0.1, "prismatic_backoff_jitter_s": 0}
    app, runtime = faults_runtime(redis_url, namespace, **conf)
    corrupt.plant_garbage(raw, namespace)
    # garbage stays at pause and deaths (and dead-letter lists: test_a_dead_letter_is_not_lost_... covers their type)
    corrupt.plant_wrong_types(raw, namespace, skip=("dlq", "pause", "deaths"))
    foreign = {}
    for other in (f"{namespace}x", "other"):
        for queue in ("storage", "cache", "sources", "monitor"):
            name = Keys(other).key("pause", queue, "manual")
            raw.set(name, json.dumps({"domain": "core", "reason": "manual", "by": "x", "since": 0, "until": 4e9}))
            foreign[name] = raw.get(name)
    raw.set(Keys(namespace).head, b"no kind")
    raw.set(Keys(namespace).key("unknown-kind", "x"), b"\x80\x04junk")
    work, poison = app.tasks["faults.work"], app.tasks["basic.poison"]
    with worker(namespace, faults_env(redis_url, namespace, redis_url, store=redis_url, conf=conf),
                name="corrupt") as w:
        w.wait_ready(app)
        results = {f"q-{queue}": work.apply_async((f"q-{queue}",), queue=queue)
                   for queue in ("storage", "cache", "sources", "monitor", "mendel", "fitness")}
        results["crash"] = work.apply_async(("crash", 0.0, 1), queue="sources")
        raw.set(Keys(namespace).key("deaths", "poison-id"), b"not a number")
        dying = poison.apply_async(("poison",), queue="monitor", task_id="poison-id")
        for key, result in results.items():
            assert result.get(timeout=30) == (2 if key == "crash" else 1), key
            assert ledger.get(f"runs:{key}") == "1", key
        wait_for(lambda: runtime.dlq.get("osint", dying.id) is not None, timeout_s=30, message="poison quarantined")
        assert ledger.get("runs:poison") == "3"
        log = plugin_log(w.log)
    assert {name: raw.get(name) for name in foreign} == foreign, "foreign namespaces untouched"
    assert "Traceback" not in log
    assert "store-command-refused" in log or "store-corrupt-value" in log


@pytest.mark.integration
def test_a_dead_letter_is_not_lost_when_its_list_key_holds_a_foreign_type(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    """The dead-letter key holds a string: the foreign value is set aside and the dead letter stored in Redis."""
    app, runtime = faults_runtime(redis_url, namespace)
    raw.set(Keys(namespace).key("dlq", "core"), b"someone else's string")
    with worker(namespace, faults_env(redis_url, namespace, redis_url, store=redis_url), name="dlqtype",
                pool="solo") as w:
        w.wait_ready(app)
        result = app.tasks["faults.reject"].apply_async(("lost?",), queue="cache")
        result.get(timeout=30, propagate=False)
        wait_for(lambda: "supervision-dead-letter" in w.log, timeout_s=10, message="dead-lettered")
    assert runtime.dlq.get("core", result.id) is not None, "the dead letter is where an operator replays it from"
    aside = list(raw.scan_iter(match=Keys(namespace).key("dlq", "core", "corrupt", "*")))
    assert [raw.get(name) for name in aside] == [b"someone else's string"], "the foreign value is kept aside"
