"""The broker (a private, persistent redis-server) crashes and restarts mid-run; acks_late keeps every message.

Given a worker with ``task_acks_late`` on a broker that writes every command to its
append-only file before answering, when that broker is SIGKILLed mid-run and restarted
3 s later on the same port, then every message published before the crash runs at least once
(at-least-once delivery: a message whose ack was lost with the connection runs again after the
visibility timeout), including tasks that crashed, and were re-run by the plugin, while the
broker was down.

Celery 5.7 / kombu 5.7 sometimes (about 1 run in 6 here) exit the worker on the reconnect with
"Unrecoverable error: AttributeError: 'NoneType' object has no attribute 'hostname'" (raised in
kombu.transport.redis Channel._connparams while the lost connection restores its unacked
messages): not the plugin. The messages stay in the broker; like a process supervisor
(systemd, Kubernetes) the test then starts a replacement worker, and they all run.

Kombu's Redis transport takes a message off its list with BRPOP and records it as unacknowledged
only once the reply has arrived: a message BRPOP handed over in the instant of the crash, whose
reply died with the broker, is gone from the broker and never reaches a worker, with or without
the plugin (seen once in about twenty runs here). The test accepts at most two such messages, and
only when no worker ever logged receiving them and the broker holds nothing else; every message a
worker received must run.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import redis

from prismatic_celery.testing import WorkerProcess, wait_for
from tests.faults.apps import make_faults_app
from tests.faults.conftest import TRANSPORT, PersistentRedisServer, faults_env, plugin_log, worker

pytestmark = pytest.mark.integration

RECEIVED = re.compile(r"\] Task [\w.]+\[([\w-]+)\] received")
DOWN_S = 3.0
NORMAL = 150
CRASHING = 2
QUEUES = ("storage", "cache", "sources", "monitor")


def test_a_broker_crash_and_restart_loses_no_message_with_acks_late(
    redis_url: str, namespace: str, persistent_redis: PersistentRedisServer, ledger: redis.Redis
) -> None:
    """150 tasks in flight and 2 crashing while the broker is down: after the restart every one has run."""
    conf = {"broker_transport_options": TRANSPORT, "result_backend": redis_url,
            "prismatic_backoff_initial_s": 0.3, "prismatic_backoff_max_s": 0.3, "prismatic_backoff_jitter_s": 0,
            "prismatic_domain_budget": {"max_restarts": 1000, "period_s": 60}}
    broker = persistent_redis.url
    app = make_faults_app(broker, namespace, redis_url, redis_url, **conf)
    work = app.tasks["faults.work"]
    env = faults_env(broker, namespace, redis_url, store=redis_url, conf=conf)
    workers: list[WorkerProcess] = [worker(namespace, env, name="broker", concurrency=4).start()]
    died: list[str] = []
    try:
        workers[0].wait_ready(app)
        # These wait until the broker is down, then crash: the plugin must re-run them without a broker.
        crashing = {f"crash{i}": work.apply_async((f"crash{i}", 0.0, 1, "broker-down"), queue="sources")
                    for i in range(CRASHING)}
        wait_for(lambda: all(ledger.get(f"attempts:{k}") for k in crashing), timeout_s=20,
                 message="crashing tasks started")
        normal = {f"n{i}": work.apply_async((f"n{i}", 0.03), queue=QUEUES[i % len(QUEUES)]) for i in range(NORMAL)}
        wait_for(lambda: sum(1 for k in normal if ledger.get(f"runs:{k}")) >= NORMAL // 3, timeout_s=30,
                 message="a third of the run done")

        persistent_redis.crash()
        ledger.set("broker-down", "1")
        crashed_at = time.monotonic()
        done_at_crash = sum(1 for k in normal if ledger.get(f"runs:{k}"))
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - crashed_at)))  # the scenario: the broker is down 3 s
        persistent_redis.start()

        after = {f"a{i}": work.apply_async((f"a{i}", 0.0), queue=QUEUES[i % len(QUEUES)]) for i in range(20)}
        everything = {**crashing, **normal, **after}

        def all_ran() -> bool:
            current = workers[-1]
            if current.proc is not None and current.proc.poll() is not None:  # a process supervisor restarts it
                fatal = [line for line in current.log.splitlines() if "Unrecoverable error" in line]
                died.append(fatal[0] if fatal else f"exit {current.proc.returncode}")
                workers.append(worker(namespace, env, name=f"broker{len(workers)}", concurrency=4).start())
            return all(ledger.get(f"runs:{k}") for k in everything)

        vanished: list[str] = []
        try:
            wait_for(all_ran, timeout_s=45, interval_s=0.2, message="every message ran after the broker's restart")
        except AssertionError:
            missing = [k for k in everything if not ledger.get(f"runs:{k}")]
            client = redis.Redis.from_url(broker, decode_responses=True)
            state = {q: client.llen(q) for q in QUEUES} | {"unacked": client.hlen("unacked")}
            received = set(RECEIVED.findall("".join(w.log for w in workers)))
            vanished = [k for k in missing if everything[k].id not in received]
            if vanished != missing or any(state.values()) or len(vanished) > 2:
                raise AssertionError(f"not run: {missing} (never received by a worker: {vanished}); broker holds: "
                                     f"{state}; worker deaths: {died}\n{workers[-1].log[-4000:]}") from None
        recovered_s = time.monotonic() - crashed_at
        runs = {k: int(ledger.get(f"runs:{k}") or 0) for k in everything if k not in vanished}
        duplicates = {k: n for k, n in runs.items() if n > 1}
        for key in crashing:
            assert int(ledger.get(f"attempts:{key}") or 0) >= 2, "the crashed task ran again"
        stamps = {k: [json.loads(s) for s in ledger.lrange(f"stamps:{k}", 0, -1)] for k in crashing}
        ours = "\n".join(plugin_log(w.log) for w in workers)
    finally:
        for w in workers:
            w.stop()
    for key, rows in stamps.items():
        print(f"\n{key}: " + ", ".join(f"attempt {r['attempt']} retries {r['retries']} at +{r['t'] - rows[0]['t']:.2f}s"
                                      for r in rows))
    print(f"\nbroker SIGKILLed with {done_at_crash}/{NORMAL} done, down {DOWN_S:.0f}s; all {len(everything)} messages "
          f"ran {recovered_s:.1f}s after the crash; ran twice (ack lost with the connection): {duplicates}; "
          f"Celery worker deaths on the reconnect (replaced): {died}; taken by BRPOP at the crash, never received "
          f"(kombu's window): {vanished}")
    assert all(n >= 1 for n in runs.values())
    assert len(duplicates) <= 8, f"only messages in flight at the crash may run twice: {duplicates}"
    assert "Traceback" not in ours
