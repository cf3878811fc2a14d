"""Crash decisions per second against one shard of a Redis Cluster.

Run: ``python -m benchmarks.cluster [--url redis+cluster://HOST:PORT] [--processes 4] [--seconds 10] [--quick]``

Every key of a namespace carries the same hash tag (``prismatic:{<ns>}:...``), so every decision of one
namespace runs on the node serving its slot: that node's capacity is the namespace's ceiling, however
many shards the cluster has. This measures it.

Setup. A 3-master cluster on free ports of 127.0.0.1, started and stopped here (three ``redis-server
--cluster-enabled yes`` and ``redis-cli --cluster create``, the test suite's ``ClusterServers``), unless
``--url`` names one (nothing is flushed; the namespace is new). ``--processes`` processes each build the
app as a worker's pool process does (the plugin installed, its store on the cluster, every setting at
its default, lessons on) and drive the engine's crash path for ``--seconds``: ``Engine.on_crash`` of a
supervised task whose message failed with ``ConnectionError``, a new task id each time, one namespace,
one ``rest_for_one`` domain of two children (a restart every 20 failures: the default failure rate and
volume; budgets large enough that the domain keeps restarting instead of escalating). The re-run's
publish is stubbed out: the broker is not what is measured.

Reported: decisions per second over all processes; per decision, the scripts the namespace's node
ran, the Redis calls it made (``INFO commandstats``, the scripts' own included) and its
CPU time (``INFO``: ``used_cpu_user`` + ``used_cpu_sys``), hence the ceiling of one node (one second of
its CPU / CPU per decision); and the calls the other nodes received meanwhile (0: nothing of the
namespace goes elsewhere; ``INFO``, script loads and topology reads are not counted). Then one JSON
line::

    {"decisions_per_s": x, "processes": n, "seconds": s, "decisions": n, "scripts_per_decision": c,
     "shard_cpu_ms_per_decision": m, "shard_ceiling_per_s": z, "other_nodes_calls": 0}
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import redis
from celery import Celery
from celery.exceptions import Retry
from redis.cluster import RedisCluster

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.store.keys import Keys
from prismatic_celery.store.urls import connect, parse_store_url

QUEUE = "storage"
DOMAINS = {"core": {"strategy": "rest_for_one", "children": [QUEUE, "reports"]}}
ROOMY = {"max_restarts": 1_000_000, "period_s": 60}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing cluster (redis+cluster://host:port); default: start one here")
    parser.add_argument("--processes", type=int, default=4, help="client processes deciding crashes")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long they run")
    parser.add_argument("--quick", action="store_true", help="2 processes for 1 s (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.seconds = 2, 1.0
    return args


def make_app(store_url: str, namespace: str) -> Celery:
    """The app of one pool process: the plugin with its defaults, the store on the cluster."""
    app = Celery("bench-cluster", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_store_url=store_url, prismatic_namespace=namespace, prismatic_domains=DOMAINS,
                    prismatic_send_events=False, prismatic_domain_budget=ROOMY, prismatic_supervisor_budget=ROOMY)
    prismatic_celery.install(app)

    @app.task(name="bench.work", shared=False)
    def work() -> None:
        """The supervised task whose failures are decided (its body never runs here)."""

    return app


def decide(store_url: str, namespace: str, seconds: float, ready: Any, start: Any, results: Any) -> None:
    """One process: say it is ready, decide crashes from ``start`` on for ``seconds``; put how many."""
    app = make_app(store_url, namespace)
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    task = app.tasks["bench.work"]
    assert runtime.store.ping(), "the cluster answers (its topology read before the clock starts)"
    ready.put(os.getpid())
    start.wait()
    deadline, count, prefix = time.monotonic() + seconds, 0, uuid.uuid4().hex[:8]
    with patch("celery.canvas.Signature.apply_async", lambda self, *a, **k: None):
        while time.monotonic() < deadline:
            task.push_request(id=f"{prefix}-{count}", delivery_info={"routing_key": QUEUE}, retries=0,
                              called_directly=False, hostname="bench@cluster", args=(), kwargs={})
            try:
                runtime.engine.on_crash(task, ConnectionError("dependency down"))
            except Retry:
                pass
            finally:
                task.pop_request()
            count += 1
    results.put((count, runtime.store.degraded))


#: Commands of this script and of the cluster clients' set-up, not of a decision.
_NOT_DECISIONS = ("cmdstat_info", "cmdstat_script|load", "cmdstat_cluster|slots", "cmdstat_command", "cmdstat_ping",
                  "cmdstat_hello")


@dataclass(frozen=True)
class NodeStats:
    calls: dict[str, int]  # per command (INFO commandstats), those Lua ran included
    cpu_s: float

    def minus(self, before: NodeStats) -> NodeStats:
        return NodeStats({k: v - before.calls.get(k, 0) for k, v in self.calls.items() if v > before.calls.get(k, 0)},
                         self.cpu_s - before.cpu_s)

    @property
    def scripts(self) -> int:
        """Script calls: each one round trip of a client (pipelined calls included)."""
        return self.calls.get("cmdstat_evalsha", 0) + self.calls.get("cmdstat_eval", 0)

    @property
    def data_calls(self) -> int:
        """Calls that are the plugin's work (not INFO, script loads, topology reads)."""
        return sum(v for k, v in self.calls.items() if k not in _NOT_DECISIONS)


def node_stats(nodes: Sequence[redis.Redis]) -> list[NodeStats]:
    stats = []
    for node in nodes:
        info = node.info("cpu")
        calls = {k: int(v["calls"]) for k, v in node.info("commandstats").items()}
        stats.append(NodeStats(calls, float(info["used_cpu_user"]) + float(info["used_cpu_sys"])))
    return stats


@contextmanager
def cluster(url: str | None) -> Iterator[str]:
    """The cluster's URL: ``url``, or a 3-master cluster started here and stopped on the way out."""
    if url:
        yield url
        return
    from tests.conftest import ClusterServers  # the suite's own helper: one way to start a cluster

    servers = ClusterServers()
    try:
        servers.start()
        yield servers.url
    finally:
        servers.remove()


def run(url: str, processes: int, seconds: float) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    topology = connect(parse_store_url(url), {}, timeout_s=5.0)
    assert isinstance(topology, RedisCluster), f"{url} is no redis+cluster:// URL"
    home = topology.get_node_from_key(Keys(namespace).key("events"))
    nodes = [n.redis_connection for n in topology.get_primaries()]
    home_index = [n.name for n in topology.get_primaries()].index(home.name)
    context = multiprocessing.get_context("fork")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    workers = [context.Process(target=decide, args=(url, namespace, seconds, ready, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=60)
    before = node_stats(nodes)
    start.set()
    counts = [results.get(timeout=seconds + 60) for _ in workers]
    after = node_stats(nodes)
    for worker in workers:
        worker.join(30)
    decisions = sum(c for c, _ in counts)
    degraded = any(d for _, d in counts)
    deltas = [a.minus(b) for a, b in zip(after, before, strict=True)]
    shard = deltas[home_index]
    cpu_ms = shard.cpu_s * 1000 / decisions
    others = sum(d.data_calls for i, d in enumerate(deltas) if i != home_index)
    top = sorted(shard.calls.items(), key=lambda kv: -kv[1])[:6]
    print(f"{processes} processes, {seconds:.0f} s, namespace {namespace} on {home.name} "
          f"(slot {topology.keyslot(Keys(namespace).key('events'))}); python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print(f"{decisions} crash decisions: {decisions / seconds:.0f}/s; the namespace's node, per decision: "
          f"{shard.scripts / decisions:.2f} scripts, {shard.data_calls / decisions:.1f} Redis calls (inside "
          f"the scripts too; most: {', '.join(f'{k[8:]} {v / decisions:.1f}' for k, v in top)}), "
          f"{cpu_ms:.3f} ms of CPU (ceiling {1000 / cpu_ms:.0f}/s); other nodes: {others} calls"
          + ("; a process degraded to local state" if degraded else ""))
    topology.close()
    return {
        "decisions_per_s": round(decisions / seconds, 1),
        "processes": processes,
        "seconds": seconds,
        "decisions": decisions,
        "scripts_per_decision": round(shard.scripts / decisions, 3),
        "shard_cpu_ms_per_decision": round(cpu_ms, 4),
        "shard_ceiling_per_s": round(1000 / cpu_ms),
        "other_nodes_calls": others,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with cluster(args.url) as url:
        result = run(url, args.processes, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
