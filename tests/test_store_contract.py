"""One body, three stores: the memory twin, fakeredis and a real Redis behave alike."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence

import pytest
from redis.cluster import RedisCluster

from prismatic_celery.store import MemoryStore, RedisStore, Script, Store
from prismatic_celery.store.base import Scalar, ScriptCall
from prismatic_celery.testing import wait_for


def test_json_round_trip_keeps_values(store: Store) -> None:
    """A JSON value written is read back unchanged; a missing key reads as None."""
    store.set_json("prismatic:t:thing:a", {"n": 1, "items": ["x", 2.5], "ok": True})
    assert store.get_json("prismatic:t:thing:a") == {"n": 1, "items": ["x", 2.5], "ok": True}
    assert store.get_json("prismatic:t:thing:missing") is None


def test_get_many_reads_several_values_at_once(store: Store) -> None:
    """get_many answers in key order, None for missing keys."""
    store.set_json("prismatic:t:pause:a", {"q": "a"})
    store.set_json("prismatic:t:pause:c", [1, 2])
    assert store.get_many(["prismatic:t:pause:a", "prismatic:t:pause:b", "prismatic:t:pause:c"]) == [
        {"q": "a"}, None, [1, 2]]
    assert store.get_many([]) == []


def test_values_expire_after_their_ttl(store: Store) -> None:
    """A value set with a TTL reports it, then disappears once it passes."""
    store.set_json("prismatic:t:pause:q", {"until": 1}, ttl_s=0.3)
    ttl = store.ttl("prismatic:t:pause:q")
    assert ttl is not None and 0 < ttl <= 0.3
    assert store.ttl("prismatic:t:pause:none") is None
    if isinstance(store, MemoryStore):
        store.clock = lambda: time.time() + 1
    wait_for(lambda: store.get_json("prismatic:t:pause:q") is None, timeout_s=3, message="expiry")


def test_counters_count_and_expire(store: Store) -> None:
    """incr counts from one and refreshes the counter's expiry."""
    assert [store.incr("prismatic:t:deaths:m1", ttl_s=60) for _ in range(3)] == [1, 2, 3]
    ttl = store.ttl("prismatic:t:deaths:m1")
    assert ttl is not None and 59 < ttl <= 60
    assert store.incr("prismatic:t:deaths:m2", ttl_s=60) == 1


def test_delete_counts_existing_keys(store: Store) -> None:
    """delete returns how many of the keys existed."""
    store.set_json("prismatic:t:k:1", 1)
    store.set_json("prismatic:t:k:2", 2)
    assert store.delete("prismatic:t:k:1", "prismatic:t:k:2", "prismatic:t:k:3") == 2
    assert store.get_json("prismatic:t:k:1") is None


def test_hash_counters_add_up(store: Store) -> None:
    """hincr adds to fields; hgetall returns strings; hdel removes fields."""
    store.hincr("prismatic:t:stats:w1", {"q:started": 2, "q:failed": 1})
    store.hincr("prismatic:t:stats:w1", {"q:started": 3})
    store.hset("prismatic:t:stats:w1", {"note": "x"})
    assert store.hgetall("prismatic:t:stats:w1") == {"q:started": "5", "q:failed": "1", "note": "x"}
    store.hdel("prismatic:t:stats:w1", "note")
    assert "note" not in store.hgetall("prismatic:t:stats:w1")
    assert store.hgetall("prismatic:t:stats:none") == {}


def test_window_counts_only_recent_entries_and_is_capped(store: Store) -> None:
    """A sliding window drops entries older than the window and keeps at most cap entries."""
    key = "prismatic:t:restarts:q"
    now = 1_000_000.0
    assert store.window_add(key, "a", now, 10, cap=100) == 1
    assert store.window_add(key, "b", now + 5, 10, cap=100) == 2
    assert store.window_add(key, "c", now + 12, 10, cap=100) == 2  # "a" fell out
    assert store.window_count(key, now + 12, 10) == 2
    assert [m for m, _ in store.window_members(key, now + 12, 10)] == ["b", "c"]
    for i in range(10):
        store.window_add(key, f"x{i}", now + 13 + i * 0.01, 10, cap=3)
    assert store.window_count(key, now + 14, 10) == 3
    assert [m for m, _ in store.window_members(key, now + 14, 10)] == ["x7", "x8", "x9"]


def test_capped_list_keeps_the_newest(store: Store) -> None:
    """list_push drops the oldest entries beyond the cap."""
    for i in range(7):
        length = store.list_push("prismatic:t:dlq:core", {"i": i}, cap=5)
    assert length == 5
    assert store.list_len("prismatic:t:dlq:core") == 5
    assert [v["i"] for v in store.list_range("prismatic:t:dlq:core")] == [2, 3, 4, 5, 6]
    assert [v["i"] for v in store.list_range("prismatic:t:dlq:core", 0, 1)] == [2, 3]


def test_stream_is_capped_and_ordered(store: Store) -> None:
    """stream_add keeps at most maxlen entries; stream_range returns the newest, oldest first."""
    for i in range(8):
        store.stream_add("prismatic:t:events", {"type": "restart", "i": str(i)}, maxlen=5)
    entries = store.stream_range("prismatic:t:events", 3)
    assert [fields["i"] for _, fields in entries] == ["5", "6", "7"]
    assert len(store.stream_range("prismatic:t:events", 100)) == 5


def test_scan_finds_keys_of_one_namespace(store: Store) -> None:
    """scan matches a glob and never returns another namespace's keys."""
    store.set_json("prismatic:a:x:1", 1)
    store.set_json("prismatic:a:y:2", 2)
    store.set_json("prismatic:b:x:1", 3)
    assert store.scan("prismatic:a:*") == ["prismatic:a:x:1", "prismatic:a:y:2"]


def _incr_twin(store: MemoryStore, keys: Sequence[str], args: Sequence[Scalar]) -> int:
    current = int(store.raw(keys[0]) or 0) + int(args[0])
    store.set_raw(keys[0], str(current))
    return current


INCR = Script(
    name="incr_by",
    lua="return redis.call('INCRBY', KEYS[1], ARGV[1])",
    python=_incr_twin,
)


def test_scripts_run_atomically_with_the_same_result(store: Store) -> None:
    """A script gives the same answers on Redis (Lua) and in memory (its Python twin)."""
    assert store.run(INCR, ["prismatic:t:counter"], [2]) == 2
    assert store.run(INCR, ["prismatic:t:counter"], [3]) == 5


def test_several_scripts_run_in_one_call_in_order(store: Store) -> None:
    """run_many: each script's answer, in order, the same on Redis (one pipelined round trip) and in memory."""
    calls = [ScriptCall(INCR, ["prismatic:t:a"], [2]), ScriptCall(INCR, ["prismatic:t:b"], [5]),
             ScriptCall(INCR, ["prismatic:t:a"], [1])]
    assert store.run_many(calls) == [2, 5, 3]
    assert store.run_many([]) == []


def test_a_script_the_server_refuses_is_answered_alone_from_local_state(redis_url: str) -> None:
    """One script of a batch hits a key of a foreign type: its answer comes from the in-process twin, the others'
    from Redis (they are not replayed in memory), and the store stays in use."""
    real = RedisStore(redis_url)
    try:
        real.client.rpush("prismatic:t:foreign", "x")
        calls = [ScriptCall(INCR, ["prismatic:t:ok"], [2]), ScriptCall(INCR, ["prismatic:t:foreign"], [1])]
        assert real.run_many(calls) == [2, 1]
        assert real.client.get("prismatic:t:ok") == "2" and not real.degraded
        assert real.fallback.raw("prismatic:t:ok") is None
    finally:
        real.close()


def test_corrupt_json_is_skipped_with_a_warning(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A value that is not JSON reads as None and logs a warning naming the key."""
    if isinstance(store, MemoryStore):
        store.set_raw("prismatic:t:lesson:bad", "{not json")
    else:
        assert isinstance(store, RedisStore)
        store.client.set("prismatic:t:lesson:bad", b"\xff\xfe{not json")
    store.list_push("prismatic:t:dlq:x", {"ok": 1}, cap=10)
    if isinstance(store, RedisStore):
        store.client.rpush("prismatic:t:dlq:x", "garbage]")
    with caplog.at_level(logging.WARNING, logger="prismatic_celery"):
        assert store.get_json("prismatic:t:lesson:bad") is None
        assert store.list_range("prismatic:t:dlq:x") == [{"ok": 1}]
    assert "store-corrupt-value" in caplog.text and "prismatic:t:lesson:bad" in caplog.text


def test_time_is_the_server_clock(store: Store) -> None:
    """time() is within a second of this host's clock (same machine)."""
    assert abs(store.time() - time.time()) < 1.0


def test_ping_answers(store: Store) -> None:
    """ping is True while the backend answers."""
    assert store.ping() is True


@pytest.mark.integration
@pytest.mark.parametrize("deployment", ["redis", "cluster"])
def test_a_process_forked_while_a_thread_holds_the_client_pool_lock_can_use_the_store(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    """A prefork pool process is forked while a worker thread (heartbeat, counter flush) is inside the Redis
    client's connection pool (a cluster client's: its node's pool and its topology locks): the child must not
    inherit those locks held, or its first command blocks for good."""
    url = request.getfixturevalue("redis_cluster" if deployment == "cluster" else "redis_url")
    store = RedisStore(url if isinstance(url, str) else url.url)
    store.set_json("prismatic:{t}:k", {"a": 1})
    client = store.client
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        node = client.get_node_from_key("prismatic:{t}:k")
        locks = [client._lock, manager._initialization_lock, manager._lock, node.redis_connection.connection_pool._lock]
    else:
        locks = [client.connection_pool._lock]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the pool process
        try:
            os.write(write, b"1" if store.get_json("prismatic:{t}:k") == {"a": 1} and not store.degraded else b"0")
        finally:
            os._exit(0)
    release.set()
    holder.join()
    try:
        wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, timeout_s=10, interval_s=0.05,
                 message="the forked process to finish its command")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    assert os.read(read, 1) == b"1"
