"""When a worker's heartbeat writes its registration: on a change, every third of its TTL, and after an outage."""

from __future__ import annotations

from celery import Celery

from prismatic_celery.config import load_settings
from prismatic_celery.observability.workers import Heartbeat, live_registrations, registration_ttl_s, worker_key
from prismatic_celery.store import MemoryStore
from prismatic_celery.store.keys import Keys

KEYS = Keys("reg")


def _heartbeat() -> tuple[Heartbeat, MemoryStore, list[float]]:
    app = Celery("reg", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_store_url="memory://")
    now = [100.0]
    store = MemoryStore()
    return Heartbeat(store, KEYS, load_settings(app), clock=lambda: now[0]), store, now


def _registration(queues: list[str], beat_at: float) -> dict[str, object]:
    return {"hostname": "w1@h", "pid": 1, "queues": queues, "heartbeat_at": beat_at}


def test_an_unchanged_registration_is_written_every_third_of_its_ttl() -> None:
    """Beats once per second with the same content: written at the first, then once the third of the TTL
    (10 s by default) has passed; the heartbeat time alone is no change."""
    heartbeat, store, now = _heartbeat()
    assert registration_ttl_s(heartbeat.settings) == 10.0, "the default"
    wrote = []
    for second in range(8):
        now[0] = 100.0 + second
        wrote.append(heartbeat.beat(_registration(["a"], now[0])))
    assert wrote == [True, False, False, False, True, False, False, False]
    assert store.get_json(worker_key(KEYS, "w1@h"))["heartbeat_at"] == 104.0
    assert [r["hostname"] for r in live_registrations(store, KEYS, heartbeat.settings)] == ["w1@h"]


def test_a_change_of_what_the_worker_serves_is_written_at_the_next_beat() -> None:
    heartbeat, store, now = _heartbeat()
    assert heartbeat.beat(_registration(["a", "b"], now[0]))
    now[0] += 1.0
    assert heartbeat.beat(_registration(["a"], now[0]))
    assert store.get_json(worker_key(KEYS, "w1@h"))["queues"] == ["a"]
    now[0] += 1.0
    assert not heartbeat.beat(_registration(["a"], now[0]))


def test_every_beat_writes_while_the_store_is_unreachable_and_once_after_an_outage() -> None:
    """The server may have restarted empty: the registration is not trusted to be there until a write after the
    outage reached it."""
    heartbeat, store, now = _heartbeat()
    assert heartbeat.beat(_registration(["a"], now[0]))
    store.degraded, store.failures = True, 1
    now[0] += 1.0
    assert heartbeat.beat(_registration(["a"], now[0]))
    now[0] += 1.0
    assert heartbeat.beat(_registration(["a"], now[0])), "still unreachable"
    store.degraded = False
    store.delete(worker_key(KEYS, "w1@h"))  # restarted without persistence
    now[0] += 1.0
    assert heartbeat.beat(_registration(["a"], now[0])), "the first beat after the outage"
    assert store.get_json(worker_key(KEYS, "w1@h")) is not None
    now[0] += 1.0
    assert not heartbeat.beat(_registration(["a"], now[0]))
    store.failures = 2  # an outage between two beats, seen by another command
    now[0] += 1.0
    assert heartbeat.beat(_registration(["a"], now[0]))
