"""Store URLs: which Redis deployment ``prismatic_store_url`` names, and the client that reaches it.

| URL | Deployment |
|---|---|
| ``redis://[user:password@]host[:port][/db]`` | one Redis server (ACL user and password optional) |
| ``rediss://...`` | the same over TLS (``?ssl_cert_reqs=required&ssl_ca_certs=/path`` as redis-py reads them) |
| ``unix://[user:password@]/path/to/redis.sock[?db=N]`` | one Redis server on a Unix socket |
| ``sentinel://[user:password@]host:port[/db];sentinel://host:port...`` | the master a Sentinel names |
| ``redis+cluster://[user:password@]host:port[,host:port...]`` | a Redis Cluster (``rediss+cluster://``: TLS) |
| ``memory://`` | this process only: demos and tests |

``prismatic_store_transport_options`` follows Celery's ``broker_transport_options`` for Sentinel:
``master_name`` (required with ``sentinel://``), ``sentinel_kwargs`` (options of the connections to
the Sentinels, e.g. their own ``password``), ``min_other_sentinels``; and, with every Redis URL,
``username`` and ``password`` (the store's credentials kept out of the URL).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigurationError
from ..validate import as_int, as_mapping, as_str, reject_unknown

__all__ = ["Client", "StoreTarget", "check_transport_options", "connect", "parse_store_url", "reset_locks"]

#: What a store talks to: one server (directly or through Sentinel) or a cluster.
Client = redis.Redis | RedisCluster

Shape = Literal["memory", "redis", "sentinel", "cluster"]
_SCHEMES: dict[str, Shape] = {
    "memory": "memory", "redis": "redis", "rediss": "redis", "unix": "redis", "sentinel": "sentinel",
    "redis+cluster": "cluster", "rediss+cluster": "cluster",
}
SENTINEL_PORT = 26379
REDIS_PORT = 6379
CLUSTER_RETRIES = 1
_CREDENTIALS = ("username", "password")
_SENTINEL_ONLY = ("master_name", "sentinel_kwargs", "min_other_sentinels")


@dataclass(frozen=True)
class StoreTarget:
    """A parsed store URL: its shape, the nodes it names and the connection options it carries."""

    shape: Shape
    url: str = field(repr=False)  # it may hold a password
    nodes: tuple[tuple[str, int], ...] = ()  # the Sentinels, or the cluster's start-up nodes
    options: Mapping[str, Any] | None = field(default=None, repr=False)  # redis-py's options read from the URL

    @property
    def shared(self) -> bool:
        """True when every process reaching this URL sees the same state (anything but ``memory://``)."""
        return self.shape != "memory"


def parse_store_url(url: str) -> StoreTarget:
    """Parse and check a store URL; ValueError saying what is wrong and what is supported."""
    scheme = url.partition("://")[0] if "://" in url else ""
    shape = _SCHEMES.get(scheme.lower())
    if shape is None:
        raise ValueError(f"{url.split('@')[-1]!r} is not supported; use redis://, rediss://, unix://, sentinel://, "
                         "redis+cluster://, rediss+cluster:// or memory://")
    if shape == "memory":
        return StoreTarget("memory", url)
    if shape == "sentinel":
        return _sentinel_target(url)
    if shape == "cluster":
        return _cluster_target(url, tls=scheme.lower().startswith("rediss"))
    return StoreTarget("redis", url, options=_redis_options(url))


def _redis_options(url: str) -> dict[str, Any]:
    try:
        return dict(parse_url(url))  # type: ignore[no-untyped-call]  # redis-py leaves parse_url unannotated
    except ValueError as exc:
        raise ValueError(f"cannot read the URL: {exc}") from exc


def _address(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) as ``(host, port)``."""
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not host:port ({exc})") from exc
    if not host:
        raise ValueError(f"{text!r} names no host")
    return host, port or default_port


def _sentinel_target(url: str) -> StoreTarget:
    nodes = []
    options: dict[str, Any] = {}
    for index, part in enumerate(p.strip() for p in url.split(";") if p.strip()):
        scheme, _, rest = part.partition("://")
        if scheme.lower() != "sentinel":
            raise ValueError(f"every ';'-separated part must be a sentinel:// URL, not {scheme}://")
        parsed = _redis_options(f"redis://{rest}")
        if not parsed.get("host"):
            raise ValueError(f"sentinel://{rest.rpartition('@')[2]} names no host")
        nodes.append((str(parsed.pop("host")), int(parsed.pop("port", SENTINEL_PORT))))
        if index == 0:  # Celery's convention: the credentials and db come with the first Sentinel
            options = parsed
    return StoreTarget("sentinel", url, nodes=tuple(nodes), options=options)


def _cluster_target(url: str, *, tls: bool) -> StoreTarget:
    rest = url.partition("://")[2]
    netloc, slash, tail = rest.partition("/")
    netloc, question, query = netloc.partition("?")
    credentials, at, hosts = netloc.rpartition("@")
    nodes = tuple(_address(h.strip(), REDIS_PORT) for h in hosts.split(",") if h.strip())
    if not nodes:
        raise ValueError("a cluster URL names at least one host:port")
    first_host = hosts.split(",")[0].strip()
    scheme = "rediss" if tls else "redis"
    options = _redis_options(f"{scheme}://{credentials}{at}{first_host}{slash}{tail}{question}{query}")
    if options.pop("db", 0) != 0:
        raise ValueError("a Redis Cluster has only database 0")
    for key in ("host", "port"):
        options.pop(key, None)
    return StoreTarget("cluster", url, nodes=nodes, options=options)


def check_transport_options(setting: str, target: StoreTarget, value: Any) -> dict[str, Any]:
    """Check ``prismatic_store_transport_options`` (``setting``) against the store URL it goes with."""
    options = dict(as_mapping(setting, value or {}))
    if target.shape == "memory":
        if options:
            raise ConfigurationError(setting, "memory:// takes no transport options")
        return {}
    reject_unknown(setting, options, (*_CREDENTIALS, *_SENTINEL_ONLY) if target.shape == "sentinel" else _CREDENTIALS)
    for key in _CREDENTIALS:
        if key in options:
            as_str(f"{setting}.{key}", options[key])
            if (target.options or {}).get(key) is not None:
                raise ConfigurationError(f"{setting}.{key}", "given twice: in the store URL and here")
    if target.shape == "sentinel":
        if "master_name" not in options:
            raise ConfigurationError(setting, "a sentinel:// store URL needs "
                                              "{'master_name': '<the name the Sentinels monitor>'}")
        as_str(f"{setting}.master_name", options["master_name"])
        as_mapping(f"{setting}.sentinel_kwargs", options.get("sentinel_kwargs", {}))
        as_int(f"{setting}.min_other_sentinels", options.get("min_other_sentinels", 0), minimum=0)
    return options


def connect(target: StoreTarget, options: Mapping[str, Any], *, timeout_s: float) -> Client:
    """A client of the deployment ``target`` names. A cluster client asks a node for the topology at once
    (RedisClusterException or ConnectionError when none answers); the others connect on first use."""
    common: dict[str, Any] = {
        "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "decode_responses": True,
        "encoding_errors": "replace",
    }
    credentials = {k: options[k] for k in _CREDENTIALS if k in options}
    if target.shape == "sentinel":
        return _sentinel_client(target, options, common, credentials)
    if target.shape == "cluster":
        return _cluster_client(target, common, credentials)
    return redis.Redis.from_url(target.url, **{"health_check_interval": 30, **common, **credentials})


def _sentinel_client(
    target: StoreTarget, options: Mapping[str, Any], common: dict[str, Any], credentials: dict[str, Any],
) -> redis.Redis:
    timeouts = {k: v for k, v in common.items() if k.startswith("socket_")}
    sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel unannotated
        list(target.nodes), min_other_sentinels=int(options.get("min_other_sentinels", 0)),
        sentinel_kwargs={**timeouts, **dict(options.get("sentinel_kwargs") or {})},
        **timeouts,
    )
    master_options = {"health_check_interval": 30, **common, **dict(target.options or {}), **credentials}
    master_options.pop("connection_class", None)
    master: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]  # unannotated in redis-py
        str(options["master_name"]), redis_class=redis.Redis, **master_options)
    return master


def _cluster_client(target: StoreTarget, common: dict[str, Any], credentials: dict[str, Any]) -> RedisCluster:
    options = {**common, **dict(target.options or {}), **credentials}
    if options.pop("connection_class", None) is not None:
        options["ssl"] = True  # rediss+cluster://
    nodes = [ClusterNode(host, port) for host, port in target.nodes]  # type: ignore[no-untyped-call]  # unannotated
    # One immediate retry (after a node failed over, it re-reads the topology), not redis-py's ten with backoff:
    # a store command must fail within about two timeouts, so a task never waits on a sick node.
    return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), CLUSTER_RETRIES), **options)


def reset_locks(client: Client) -> None:
    """In a forked child, fresh locks in ``client``'s connection pools (a parent thread may have held one).

    redis-py resets a pool in a child under the inherited pool lock, so a pool process forked while a worker
    thread held that lock would block on its first command, for good. A cluster client has one pool per
    node, and locks of its own around its topology.
    """
    holders: list[object] = [getattr(client, "connection_pool", None)]
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        holders += [client, manager, getattr(manager, "read_load_balancer", None)]
        nodes = manager.nodes_cache.values()
        holders += [getattr(node.redis_connection, "connection_pool", None) for node in nodes]
    for holder in holders:
        for name in ("_fork_lock", "_lock", "_initialization_lock"):
            if holder is not None and hasattr(holder, name):
                setattr(holder, name, threading.RLock())
