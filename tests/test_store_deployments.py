"""The store on each deployment it supports, against servers these tests start and stop: a 3-master Redis
Cluster, a master with its replica and a Sentinel (a failover in the middle of a run), an ACL user limited
to its namespace's keys; and the store URL and transport options checked at start-up (no server)."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from redis.cluster import RedisCluster

from prismatic_celery import ConfigurationError
from prismatic_celery.circuits import CircuitOpenError, Circuits, CircuitSpec
from prismatic_celery.config import load_settings
from prismatic_celery.runtime import Runtime
from prismatic_celery.store import RedisStore, Script, urls
from prismatic_celery.store.keys import Keys
from prismatic_celery.store.urls import parse_store_url
from prismatic_celery.supervision.pauses import read_pauses
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.conftest import REDIS_HOST, ClusterServers, RedisServer, SentinelServers, _require
from tests.integration.conftest import basic_env
from tests.test_engine_decisions import TRIP_AT_ONCE, _app, _crash

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-store-pw"
#: The narrowest rules that run every store operation (README, Deployment): the namespace's keys and
#: channel, reads, writes, scripts, pub/sub, and what the clients ask on connecting.
ACL_RULES = ("-@all", "+@read", "+@write", "+@scripting", "+@pubsub", "+ping", "+multi", "+exec", "+time",
             "+select", "+command", "+cluster|slots", "-@dangerous", "-script|flush", "-script|kill")


def _conf(url: str, options: Any = None) -> dict[str, Any]:
    app = Celery("urls", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_store_url=url, prismatic_domains={"core": {"children": ["q"]}})
    if options is not None:
        app.conf.update(prismatic_store_transport_options=options)
    settings = load_settings(app)
    return {"url": settings.store_url, "options": settings.store_transport_options}


# -- URLs and options, checked at start-up -------------------------------------------------------------------

@pytest.mark.parametrize(("url", "options", "shape", "nodes"), [
    ("redis://user:pw@10.0.0.1:6380/2", None, "redis", ()),
    ("rediss://:pw@cache.example:6380/0?ssl_cert_reqs=required", None, "redis", ()),
    ("unix:///run/redis.sock?db=3", None, "redis", ()),
    ("redis://10.0.0.1", {"username": "app", "password": "pw"}, "redis", ()),
    ("sentinel://:pw@s1:26379/1;sentinel://s2;sentinel://[::1]:26380", {"master_name": "mymaster",
                                                                       "sentinel_kwargs": {"password": "spw"}},
     "sentinel", (("s1", 26379), ("s2", 26379), ("::1", 26380))),
    ("redis+cluster://app:pw@n1:7000,n2:7001, n3", None, "cluster", (("n1", 7000), ("n2", 7001), ("n3", 6379))),
    ("rediss+cluster://n1:7000/0?ssl_cert_reqs=none", None, "cluster", (("n1", 7000),)),
    ("memory://", None, "memory", ()),
])
def test_every_supported_store_url_is_accepted(url: str, options: Any, shape: str,
                                               nodes: tuple[tuple[str, int], ...]) -> None:
    """Each shape of the README's Deployment section loads; the parsed URL says what it names."""
    assert _conf(url, options) == {"url": url, "options": options or {}}
    target = parse_store_url(url)
    assert (target.shape, target.nodes, target.shared) == (shape, nodes, shape != "memory")
    if url.startswith("rediss+cluster"):
        assert target.options is not None and target.options["ssl_cert_reqs"] == "none"


def test_a_cluster_url_gives_the_cluster_client_every_node_its_credentials_tls_and_one_quick_retry(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """rediss+cluster:// asks for TLS with the URL's options; the transport options' credentials apply."""
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(urls, "RedisCluster", lambda **options: made.append(options))
    target = parse_store_url("rediss+cluster://n1:7000,n2:7001?ssl_cert_reqs=none&socket_timeout=2")
    urls.connect(target, {"username": "app", "password": "pw"}, timeout_s=0.5)
    [options] = made
    assert [(n.host, n.port) for n in options.pop("startup_nodes")] == [("n1", 7000), ("n2", 7001)]
    assert options.pop("retry").get_retries() == urls.CLUSTER_RETRIES == 1
    assert options == {"ssl": True, "ssl_cert_reqs": "none", "socket_timeout": 2.0, "socket_connect_timeout": 0.5,
                       "decode_responses": True, "encoding_errors": "replace", "username": "app", "password": "pw"}
    assert "pw" not in repr(target) and "pw" not in repr(parse_store_url("redis://:pw@h"))


@pytest.mark.parametrize(("url", "problem"), [
    ("http://user:hunter2@host", "is not supported"),
    ("redis+cluster://", "at least one host"),
    ("redis+cluster://user:hunter2@n1:7000/3", "only database 0"),
    ("redis+cluster://n1:notaport", "not host:port"),
    ("sentinel://s1:26379;redis://user:hunter2@s2", "must be a sentinel:// URL"),
    ("sentinel://:hunter2@/0", "names no host"),
])
def test_a_bad_store_url_fails_at_start_naming_the_setting_and_not_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as failed:
        _conf(url, {"master_name": "m"} if url.startswith("sentinel") else None)
    assert failed.value.setting == "prismatic_store_url" and problem in failed.value.problem
    assert "hunter2" not in str(failed.value)


@pytest.mark.parametrize(("url", "options", "setting", "problem"), [
    ("sentinel://s1:26379", None, "prismatic_store_transport_options", "needs {'master_name'"),
    ("sentinel://s1:26379", {"master_name": 5}, "prismatic_store_transport_options.master_name", "a string"),
    ("sentinel://s1:26379", {"master_name": "m", "sentinel_kwargs": "pw"},
     "prismatic_store_transport_options.sentinel_kwargs", "a mapping"),
    ("redis://h", {"master_name": "m"}, "prismatic_store_transport_options.master_name", "unknown setting"),
    ("redis://h", {"visibility_timeout": 3600}, "prismatic_store_transport_options.visibility_timeout",
     "unknown setting"),
    ("redis://:pw@h", {"password": "pw"}, "prismatic_store_transport_options.password", "given twice"),
    ("memory://", {"password": "pw"}, "prismatic_store_transport_options", "takes no transport options"),
    ("redis://h", ["master_name"], "prismatic_store_transport_options", "expected a mapping"),
])
def test_bad_transport_options_fail_at_start_naming_the_setting(url: str, options: Any, setting: str,
                                                                problem: str) -> None:
    with pytest.raises(ConfigurationError) as failed:
        _conf(url, options)
    assert failed.value.setting == setting and problem in failed.value.problem, failed.value


def test_a_store_url_derived_from_the_result_backend_is_checked_too() -> None:
    """No prismatic_store_url: the result backend's Redis URL is the store's, and a broken one fails at start-up
    naming prismatic_store_url; a store built in code for a Sentinel without master_name says what is missing."""
    app = Celery("derived", broker="memory://", backend="redis://h/0?socket_timeout=soon", set_as_current=False)
    app.conf.update(prismatic_domains={"core": {"children": ["q"]}})
    with pytest.raises(ConfigurationError) as failed:
        load_settings(app)
    assert failed.value.setting == "prismatic_store_url" and "socket_timeout" in failed.value.problem
    with pytest.raises(ConfigurationError) as failed:
        RedisStore("sentinel://s1:26379")
    assert failed.value.setting == "prismatic_store_transport_options" and "master_name" in failed.value.problem


# -- Redis Cluster --------------------------------------------------------------------------------------------

def _cluster_client(cluster: ClusterServers) -> RedisCluster:
    return RedisCluster(host=REDIS_HOST, port=cluster.nodes[0].port, decode_responses=True)


def _namespace_keys(cluster: ClusterServers, namespace: str) -> dict[int, list[str]]:
    """Every key of ``namespace``, per node port holding it."""
    found = {}
    for node in cluster.nodes:
        client = node.client()
        keys = list(client.scan_iter(match=Keys(namespace).pattern(), count=1000))
        client.close()
        if keys:
            found[node.port] = keys
    return found


def _runtime(url: str, namespace: str, **conf: Any) -> tuple[Celery, Runtime, Any]:
    return _app(url, prismatic_namespace=namespace, prismatic_store_retry_s=0.2, **conf)


def _replay(app: Celery, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, task_id: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **options: sent.append(options))
    assert runtime.dlq.replay(app, "core", task_id) == task_id
    return sent


@pytest.mark.integration
def test_restarts_pauses_lessons_and_dead_letters_on_a_cluster_keep_a_namespace_in_one_slot(
    redis_cluster: ClusterServers, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's crash path against a 3-master cluster: a restart, its rest_for_one pauses, the lessons and a
    dead letter replayed once; every key written is on one node, in one slot, and the store never degraded."""
    monkeypatch.setattr("celery.canvas.Signature.apply_async", lambda self, *a, **k: None)  # no broker here
    app, runtime, recorder = _runtime(redis_cluster.url, namespace)
    for i in range(20):
        assert _crash(app, runtime, "storage", ConnectionError("refused"), task_id=f"t-{i}") is not None
    assert _crash(app, runtime, "storage", ValueError("bad payload"), task_id="d-1") is None
    assert recorder.types().count("restart") == 1 and "dead_letter" in recorder.types()
    cluster = _cluster_client(redis_cluster)
    keys = runtime.keys
    assert cluster.hgetall(keys.key("restart-totals")) == {"storage": "1"}
    assert set(read_pauses(runtime.store, keys, runtime.supervisor, ["cache", "telemetry"])) == {"cache", "telemetry"}
    assert runtime.learning is not None and runtime.learning.lessons.count() == 2
    assert runtime.learning.metrics.snapshot().crashes == 21
    assert runtime.dlq.count("core") == 1 and _replay(app, runtime, monkeypatch, "d-1")
    assert runtime.dlq.count("core") == 0
    held = _namespace_keys(redis_cluster, namespace)
    assert len(held) == 1, f"one node holds the namespace: {held}"
    [names] = held.values()
    assert {cluster.keyslot(name) for name in names} == {cluster.keyslot(keys.key("events"))}
    assert len(names) >= 10 and not runtime.store.degraded and runtime.store.failures == 0
    assert isinstance(runtime.store, RedisStore)
    node = cluster.get_node_from_key(keys.key("events"))
    assert abs(runtime.store.time() - float(cluster.time(target_nodes=node)[0])) < 2, "the namespace's node's clock"
    cluster.close()
    runtime.store.close()


@pytest.mark.integration
def test_circuits_on_a_cluster_are_shared_and_their_changes_arrive_by_pubsub(
    redis_cluster: ClusterServers, namespace: str
) -> None:
    """Two processes' breakers on one cluster: A's trip reaches B's cache through the cluster's pub/sub."""
    spec = CircuitSpec(fail_max=2, reset_timeout_s=30, call_timeout_s=5)
    stores = [RedisStore(redis_cluster.url) for _ in range(2)]
    a, b = (Circuits(store, Keys(namespace), specs={"dep": spec}, cache_ttl_s=ttl)
            for store, ttl in zip(stores, (0.0, 60.0), strict=True))
    try:
        assert b.start(wait_s=5) and b.state("dep") == "closed"

        def fail() -> None:
            raise ConnectionError("down")

        with pytest.raises(ConnectionError):
            a.get("dep").call(fail)
        with pytest.raises(CircuitOpenError):  # the second failure opens it
            a.get("dep").call(fail)
        wait_for(lambda: b.state("dep") == "open", timeout_s=5, message="B sees A's trip")
        a.reset("dep")
        wait_for(lambda: b.state("dep") == "closed", timeout_s=5, message="B sees the reset")
    finally:
        for circuits in (a, b):
            circuits.stop(timeout_s=1)
        for store in stores:
            store.close()


INCR = Script("incr_by", "return redis.call('INCRBY', KEYS[1], ARGV[1])", lambda store, keys, args: 0)


@pytest.mark.integration
def test_cluster_errors_are_store_errors_degraded_and_logged_never_raised(
    redis_cluster: ClusterServers, caplog: pytest.LogCaptureFixture
) -> None:
    """A script over two slots is refused by the cluster (answered from local state, the cluster stays in use); a
    cluster whose nodes do not answer (RedisClusterException, no RedisError) degrades the store."""
    store = RedisStore(redis_cluster.url)
    down = RedisStore(f"redis+cluster://{REDIS_HOST}:1,{REDIS_HOST}:2", timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        assert store.run(INCR, ["prismatic:{a}:x", "prismatic:{b}:x"], [1]) == 0, "the Python twin answered"
        assert not store.degraded and store.ping()
        assert store.get_many(["prismatic:{a}:x", "prismatic:{b}:x"]) == [None, None], "split per slot"
        assert down.ping() is False and down.degraded and down.get_json("prismatic:{a}:x") is None
        down.set_json("prismatic:{a}:x", 1)
        assert down.get_json("prismatic:{a}:x") == 1, "the in-process twin holds it meanwhile"
    assert "store-command-refused" in caplog.text and "keys are in 2 slots" in caplog.text
    assert "store-unavailable" in caplog.text and "RedisClusterException" in caplog.text
    store.close()
    down.close()


@pytest.mark.integration
def test_a_stalled_cluster_node_degrades_the_store_within_two_timeouts_and_it_recovers(
    redis_cluster: ClusterServers, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The node serving the namespace stops answering (CLIENT PAUSE): a command gives up after two socket timeouts
    (one retry, not redis-py's ten with backoff) and is answered locally; once the node answers, the store is back."""
    keys = Keys(namespace)
    store = RedisStore(redis_cluster.url, timeout_s=0.3, retry_s=0.2, home_key=keys.key("events"))
    key = keys.key("deaths", "m")
    assert store.incr(key, ttl_s=60) == 1
    cluster = _cluster_client(redis_cluster)
    node = cluster.get_node_from_key(key)
    admin = redis.Redis(host=node.host, port=node.port)
    try:
        admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
            assert store.incr(key, ttl_s=60) == 1, "counted in the in-process twin"
        assert time.monotonic() - started < 1.5 and store.degraded
        assert "store-unavailable" in caplog.text and "TimeoutError" in caplog.text
        wait_for(store.ping, timeout_s=10, message="the namespace's node answering again")
        assert store.incr(key, ttl_s=60) == 2 and not store.degraded
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        cluster.close()
        store.close()


@pytest.mark.integration
def test_a_worker_whose_store_is_a_cluster_reruns_crashed_tasks_restarts_the_child_and_dead_letters(
    redis_url: str, redis_cluster: ClusterServers, namespace: str
) -> None:
    """A real prefork worker (broker: the test's Redis database; store: the cluster): 25 messages fail once, each runs
    again and succeeds, the child restarts once and pauses its later siblings; an unknown failure is a dead
    letter; the lessons count every crash. All of it read back from the cluster."""
    conf = {"prismatic_backoff_initial_s": 0.2, "prismatic_backoff_max_s": 0.2, "prismatic_backoff_jitter_s": 0}
    app = make_app(redis_url, namespace, redis_cluster.url, **conf)
    env = basic_env(redis_url, namespace, conf, store=redis_cluster.url)
    with WorkerProcess("tests.apps.basic", hostname=f"cl-{namespace}@test", pool="prefork", concurrency=2, env=env,
                       cwd=ROOT) as w:
        w.wait_ready(app)
        crashing = [app.tasks["basic.flaky"].apply_async((f"s{i}", 1), queue="storage") for i in range(25)]
        doomed = app.tasks["basic.fetch_fail"].apply_async(("unknown",), queue="sources")
        assert [r.get(timeout=60) for r in crashing] == [2] * 25
        doomed.get(timeout=30, propagate=False)
        cluster = _cluster_client(redis_cluster)
        keys = Keys(namespace)
        wait_for(lambda: cluster.llen(keys.key("dlq", "osint")) == 1, timeout_s=10, message="the dead letter")
        assert cluster.hgetall(keys.key("restart-totals")) == {"storage": "1"}
        kinds = {fields.get("type") for _, fields in cluster.xrange(keys.key("events"))}
        assert {"remediation", "restart", "pause", "dead_letter"} <= kinds, kinds
        assert int(cluster.hget(keys.key("knowledge"), "crashes") or 0) == 26
        assert "store-unavailable" not in w.log and "store-command-refused" not in w.log
        assert len(_namespace_keys(redis_cluster, namespace)) == 1
        cluster.close()


# -- Sentinel -------------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_restarts_are_decided_before_and_after_a_sentinel_failover_in_the_middle_of_a_run(
    redis_sentinel: SentinelServers, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crashes keep coming while Sentinel fails the master over to its replica: none raises, the store follows
    the new master within a second, and the restarts decided before (replicated) and after are both there."""
    monkeypatch.setattr("celery.canvas.Signature.apply_async", lambda self, *a, **k: None)
    app, runtime, _ = _runtime(redis_sentinel.url, namespace, **TRIP_AT_ONCE,
                               prismatic_store_transport_options={"master_name": redis_sentinel.master_name})
    totals = runtime.keys.key("restart-totals")
    for i in range(3):
        _crash(app, runtime, "storage", ConnectionError("refused"), task_id=f"before-{i}")
    old, new = redis_sentinel.master.client(), redis_sentinel.replica.client()
    assert old.hget(totals, "storage") == "3"
    wait_for(lambda: new.hget(totals, "storage") == "3", timeout_s=10, message="the replica has the restarts")
    assert redis_sentinel.sentinel.client().execute_command("SENTINEL", "FAILOVER", redis_sentinel.master_name)
    deadline, during = time.monotonic() + 30, 0

    def crash_until(done: Any) -> None:
        nonlocal during
        while not done():
            _crash(app, runtime, "storage", ConnectionError("refused"), task_id=f"during-{during}")
            during += 1
            assert time.monotonic() < deadline, f"no failover followed after {during} crashes"

    # Until the replica is promoted it still receives the old master's writes; after, only the store's own.
    crash_until(lambda: redis_sentinel.master_port() == redis_sentinel.replica.port
                and new.info("replication")["role"] == "master")
    promoted = int(new.hget(totals, "storage"))
    crash_until(lambda: int(new.hget(totals, "storage")) > promoted)
    after = int(new.hget(totals, "storage"))
    for i in range(3):
        _crash(app, runtime, "storage", ConnectionError("refused"), task_id=f"after-{i}")
    assert int(new.hget(totals, "storage")) == after + 3, "decided on the new master"
    assert new.info("replication")["role"] == "master" and not runtime.store.degraded
    runtime.store.close()


# -- ACL user ---------------------------------------------------------------------------------------------------

@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    """A private Redis server whose ACL users this test may create; it also speaks TLS (``tls_port``)."""
    _require(all(shutil.which(b) for b in ("redis-server", "openssl")), "redis-server or openssl is not installed")
    server = RedisServer(tls=True)
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _set_acl_user(client: redis.Redis | RedisCluster, user: str, namespace: str) -> None:
    head = Keys(namespace).head
    client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", f"~{head}:*", f"&{head}:*",
                           *ACL_RULES)


def _whole_run(url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, **conf: Any) -> Runtime:
    """Crashes, restarts, pauses, lessons, a dead letter, a circuit over pub/sub and a SCAN, as this user."""
    monkeypatch.setattr("celery.canvas.Signature.apply_async", lambda self, *a, **k: None)
    app, runtime, recorder = _runtime(url, namespace, **TRIP_AT_ONCE, **conf,
                                      prismatic_circuits={"dep": {"fail_max": 2, "reset_timeout_s": 30}})
    for i in range(3):
        _crash(app, runtime, "storage", ConnectionError("refused"), task_id=f"t-{i}")
    _crash(app, runtime, "storage", ValueError("bad payload"), task_id="d-1")
    assert {"remediation", "restart", "pause", "dead_letter"} <= set(recorder.types())
    assert runtime.store.hgetall(runtime.keys.key("restart-totals")) == {"storage": "4"}
    assert runtime.dlq.count("core") == 1 and _replay(app, runtime, monkeypatch, "d-1")
    assert runtime.circuits.start(wait_s=5), "subscribed to the namespace's channel"
    runtime.circuits.open_for("dep", 10_000)
    assert runtime.circuits.state("dep") == "open"
    assert runtime.keys.key("restart-totals") in runtime.store.scan(runtime.keys.pattern())
    runtime.circuits.stop(timeout_s=1)
    return runtime


@pytest.mark.integration
def test_an_acl_user_limited_to_its_namespace_runs_everything_and_nothing_else(
    acl_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """redis://user:password@ with the README's narrowest rules: every operation works, not one refused; another
    namespace's key is refused by the server (NOPERM), answered locally, never raised."""
    _set_acl_user(acl_server.client(), "prismatic", namespace)
    url = f"redis://prismatic:{PASSWORD}@{acl_server.address}/1"
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        runtime = _whole_run(url, namespace, monkeypatch)
        assert not runtime.store.degraded and "store-command-refused" not in caplog.text
        assert runtime.store.get_json(Keys("other").key("pause", "q", "manual")) is None
    assert "store-command-refused" in caplog.text and "no permissions" in caplog.text
    assert PASSWORD not in caplog.text
    runtime.store.close()


@pytest.mark.integration
def test_rediss_with_an_acl_user_checks_the_servers_certificate(
    acl_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """rediss:// with the server's CA runs everything over TLS; without it the certificate is refused: the store
    degrades with a warning, nothing raises."""
    _set_acl_user(acl_server.client(), "prismatic", namespace)
    base = f"rediss://prismatic:{PASSWORD}@{REDIS_HOST}:{acl_server.tls_port}/0?ssl_cert_reqs=required"
    runtime = _whole_run(f"{base}&ssl_ca_certs={acl_server.ca_file}", namespace, monkeypatch)
    assert not runtime.store.degraded
    runtime.store.close()
    untrusted = RedisStore(base)
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        assert untrusted.ping() is False and untrusted.degraded
    assert "store-unavailable" in caplog.text and "certificate" in caplog.text and PASSWORD not in caplog.text
    untrusted.close()


@pytest.mark.integration
def test_credentials_in_the_transport_options_and_a_wrong_password(
    acl_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """username/password in prismatic_store_transport_options keep the secret out of the URL; a wrong password
    degrades the store to local state with a warning that does not print it."""
    _set_acl_user(acl_server.client(), "prismatic", namespace)
    runtime = _whole_run(f"redis://{acl_server.address}/0", namespace, monkeypatch,
                         prismatic_store_transport_options={"username": "prismatic", "password": PASSWORD})
    assert not runtime.store.degraded
    runtime.store.close()
    wrong = RedisStore(f"redis://prismatic:not-{PASSWORD}@{acl_server.address}/0")
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        assert wrong.ping() is False and wrong.degraded
    assert "store-unavailable" in caplog.text and PASSWORD not in caplog.text
    wrong.close()


@pytest.mark.integration
def test_an_acl_user_limited_to_its_namespace_on_every_node_of_a_cluster(
    redis_cluster: ClusterServers, namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same rules on each node (ACLs are per node) run everything on the cluster, not one command refused."""
    user = f"prismatic-{uuid.uuid4().hex[:8]}"
    admins = [node.client() for node in redis_cluster.nodes]
    try:
        for admin in admins:
            _set_acl_user(admin, user, namespace)
        url = redis_cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{PASSWORD}@")
        with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
            runtime = _whole_run(url, namespace, monkeypatch)
        assert not runtime.store.degraded and "store-command-refused" not in caplog.text, caplog.text
        runtime.store.close()
    finally:
        for admin in admins:
            admin.execute_command("ACL", "DELUSER", user)
            admin.close()
