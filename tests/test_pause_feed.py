"""The pause feed: a worker's main process shares its reconciler's pauses with its pool processes, which then
read no pause record from the store themselves (one store read per period per worker, not per process)."""

from __future__ import annotations

import os
import time

from prismatic_celery.store import MemoryStore
from prismatic_celery.store.keys import Keys
from prismatic_celery.supervision.cache import PauseCache, PauseFeed
from prismatic_celery.supervision.pauses import Pause, set_pause
from prismatic_celery.supervision.reconcile import Reconciler
from prismatic_celery.supervision.tree import Supervisor

SUPERVISOR = Supervisor.from_config("prismatic_domains", {"core": {"strategy": "rest_for_one",
                                                                   "children": ["storage", "cache"]}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.mgets = 0

    def get_many(self, keys):  # type: ignore[no-untyped-def]
        self.mgets += 1
        return super().get_many(keys)


def _pause(queue: str, reason: str = "manual") -> Pause:
    now = time.time()
    return Pause(queue=queue, domain="core", reason=reason, by="ops", since=now, until=now + 60)


def _cache(store: CountingStore, clock: Clock, feed: PauseFeed) -> PauseCache:
    cache = PauseCache(store, Keys("t"), SUPERVISOR.queues, max_age_s=1.0, supervisor=SUPERVISOR, clock=clock)
    cache.follow(feed)
    return cache


def test_a_pool_process_takes_its_view_from_the_feed_not_from_the_store() -> None:
    store, clock = CountingStore(), Clock()
    feed = PauseFeed(clock=clock)
    cache = _cache(store, clock, feed)
    feed.publish({"cache": _pause("cache")}, read_at=clock.now)
    assert set(cache.current()) == {"cache"}
    clock.now += 0.6  # half a period: the view is taken again, from the feed
    feed.publish({}, read_at=clock.now)
    assert cache.current() == {}
    assert store.mgets == 0, "no store read while the feed is fresh"


def test_a_stale_or_empty_feed_sends_the_process_back_to_the_store() -> None:
    store, clock = CountingStore(), Clock()
    feed = PauseFeed(clock=clock)
    cache = _cache(store, clock, feed)
    set_pause(store, Keys("t"), _pause("storage"))
    assert set(cache.current()) == {"storage"} and store.mgets == 1, "nothing published yet: the store is read"
    feed.publish({}, read_at=clock.now)
    clock.now += 2.5  # the reconciler stopped publishing two periods ago
    assert set(cache.current()) == {"storage"} and store.mgets == 2


def test_after_changing_a_pause_the_process_reads_the_store_and_never_an_older_feed() -> None:
    store, clock = CountingStore(), Clock()
    feed = PauseFeed(clock=clock)
    cache = _cache(store, clock, feed)
    feed.publish({}, read_at=clock.now)
    assert cache.current() == {}
    clock.now += 0.1
    set_pause(store, Keys("t"), _pause("cache"))  # this process paused cache
    cache.invalidate()
    assert set(cache.current()) == {"cache"} and store.mgets == 1
    clock.now += 0.6  # the feed still holds the snapshot read before the change: the store is read again
    assert set(cache.current()) == {"cache"} and store.mgets == 2
    feed.publish({"cache": _pause("cache")}, read_at=clock.now)
    clock.now += 0.6
    assert set(cache.current()) == {"cache"} and store.mgets == 2, "a newer snapshot is taken from the feed"


def test_a_degraded_store_keeps_the_process_on_its_own_memory() -> None:
    store, clock = CountingStore(), Clock()
    feed = PauseFeed(clock=clock)
    cache = _cache(store, clock, feed)
    feed.publish({"cache": _pause("cache")}, read_at=clock.now)
    store.degraded = True  # type: ignore[attr-defined]
    assert cache.current() == {} and store.mgets == 1


def test_the_reconciler_publishes_every_queues_pauses_and_a_forked_process_reads_them() -> None:
    """The worker consumes storage only; a pool process still sees cache's pause (a rest_for_one pause its
    success may end)."""
    store = CountingStore()
    keys = Keys("t")
    reconciler = Reconciler(store, keys, SUPERVISOR, ["storage"])
    reconciler.feed = PauseFeed()
    set_pause(store, keys, _pause("cache"))
    reconciler.poll()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pool process
        shared = reconciler.feed.read(max_age_s=60)
        os.write(write, ",".join(sorted(shared[0]) if shared else ["none"]).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"cache"


def test_a_snapshot_that_does_not_fit_is_not_shared() -> None:
    clock = Clock()
    feed = PauseFeed(64, clock=clock)
    assert not feed.publish({f"q{i}": _pause(f"q{i}") for i in range(5)}, read_at=clock.now)
    assert feed.read(max_age_s=60) is None
    assert feed.publish({}, read_at=clock.now) and feed.read(max_age_s=60) == ({}, clock.now)
