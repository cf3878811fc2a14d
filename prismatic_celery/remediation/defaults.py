"""Rules that make sense out of the box, tried after the user's rules (first match wins).

| Rule | Matches | Action |
|---|---|---|
| ``default.out_of_memory`` | ``MemoryError`` | ``recycle_process`` |
| ``default.too_many_open_files`` | an OSError or network error saying "Too many open files" | ``recycle_process`` |
| ``default.disk_full`` | any failure saying "No space left on device" | ``escalate("disk_full")`` |
| ``default.database_connection`` | :data:`DATABASE_ERRORS` | ``restart_child`` |
| ``default.network`` | :data:`NETWORK_ERRORS` | ``retry_with_backoff(1000, 30000, 1000)`` |
| (none) | anything else | ``escalate("unknown_failure_pattern")``: dead letter, one escalation per pattern |

Why these:

* Running out of file descriptors (EMFILE/ENFILE) is almost always a descriptor leak in the
  worker's own process: a fresh process releases them, so it gets ``recycle_process`` like
  ``MemoryError``. The rule also covers network errors, which wrap the socket error in their
  message (``requests``' ConnectionError, ``httpx.ConnectError``, ...), and sits before the
  network rule so a leak is not retried with backoff.
* A full disk (ENOSPC) is a host condition: neither a retry nor a new process frees space, and
  retrying fills the queue with failures. It escalates to operators with reason ``disk_full``.
  It matches any exception type, so a database server reporting a full disk escalates too.
* Database connection errors re-run the message under the default backoff (``restart_child``);
  a database that stays down fails every message, so the child fails by rate and its strategy,
  budget and escalation follow.
  Note that some drivers raise OperationalError for deadlocks, lock timeouts and serialization
  failures too; a re-run is the usual fix for those as well.
* Connection, DNS and timeout errors of the network libraries retry with exponential backoff;
  when the circuit breaker guarding the dependency trips, the engine opens the circuit, so no
  composite action is needed.

Third-party classes are matched by qualified name (``module.QualName`` over the MRO), so none
of those libraries is imported, or needs to be installed. Classes of the plugin's own
dependencies (redis, kombu, amqp, celery/billiard) and of the standard library are matched
directly, which also covers re-exports such as ``celery.exceptions.SoftTimeLimitExceeded``
(really ``billiard.exceptions.SoftTimeLimitExceeded``).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import amqp.exceptions
import kombu.exceptions
import redis.exceptions
from celery.exceptions import SoftTimeLimitExceeded

from .actions import Escalate, RecycleProcess, RestartChild, RetryWithBackoff
from .rules import ExceptionSpec, Match, Rule

__all__ = [
    "DATABASE_ERRORS",
    "DEFAULT_RETRY",
    "DEFAULT_RULES",
    "DEFAULT_RULE_NAMES",
    "NETWORK_ERRORS",
    "rules_table",
]

#: The backoff of the network rule: 1 s, doubling up to 30 s, plus up to 1 s of jitter.
DEFAULT_RETRY = RetryWithBackoff(initial_ms=1000, max_ms=30_000, jitter_ms=1000)

#: Connection, name-resolution and timeout errors (subclasses included).
NETWORK_ERRORS: tuple[ExceptionSpec, ...] = (
    ConnectionError,  # ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError
    TimeoutError,  # socket.timeout is an alias of it
    socket.gaierror,  # DNS resolution failed (often a blip in containers)
    "asyncio.exceptions.TimeoutError",  # distinct from TimeoutError on Python 3.10
    "concurrent.futures._base.TimeoutError",  # ditto
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    amqp.exceptions.ConnectionError,  # RecoverableConnectionError, ConnectionForced, ...
    SoftTimeLimitExceeded,
    "requests.exceptions.ConnectionError",  # ConnectTimeout, ProxyError, SSLError
    "requests.exceptions.Timeout",  # ReadTimeout
    "httpx.ConnectError",
    "httpx.NetworkError",  # ReadError, WriteError, CloseError
    "httpx.TimeoutException",  # ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout
    "urllib3.exceptions.NewConnectionError",
    "urllib3.exceptions.ConnectTimeoutError",
    "urllib3.exceptions.TimeoutError",  # ReadTimeoutError
    "urllib3.exceptions.ProtocolError",  # connection aborted or reset mid-response
    "urllib3.exceptions.MaxRetryError",  # urllib3 retries refused connections before raising this
    "aiohttp.client_exceptions.ClientConnectionError",  # ClientConnectorError, ServerDisconnectedError
)

#: Errors of database drivers and ORMs that mean the connection failed or was lost.
DATABASE_ERRORS: tuple[ExceptionSpec, ...] = (
    "psycopg2.OperationalError",
    "psycopg2.InterfaceError",  # "connection already closed"
    "psycopg.OperationalError",
    "psycopg.InterfaceError",
    "psycopg.errors.OperationalError",  # psycopg 3 re-labels its DB-API classes as "psycopg"; both names
    "psycopg.errors.InterfaceError",
    "sqlalchemy.exc.OperationalError",
    "sqlalchemy.exc.InterfaceError",
    "sqlalchemy.exc.DisconnectionError",
    "sqlalchemy.exc.TimeoutError",  # connection pool exhausted
    "django.db.utils.OperationalError",
    "django.db.utils.InterfaceError",
    "pymysql.err.OperationalError",
    "pymysql.err.InterfaceError",
    "MySQLdb.OperationalError",
    "MySQLdb._exceptions.OperationalError",  # where mysqlclient >= 1.4 defines it
    "_mysql_exceptions.OperationalError",  # mysqlclient < 1.4
    "asyncpg.exceptions.PostgresConnectionError",  # SQLSTATE class 08
    "asyncpg.exceptions.ConnectionDoesNotExistError",
    "asyncpg.exceptions.CannotConnectNowError",
    "asyncpg.exceptions.TooManyConnectionsError",
    "pymongo.errors.ConnectionFailure",  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
)

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(Match(exceptions=(MemoryError,)), RecycleProcess(), name="default.out_of_memory"),
    Rule(
        Match(exceptions=(OSError, *NETWORK_ERRORS), message=r"Too many open files"),
        RecycleProcess(),
        name="default.too_many_open_files",
    ),
    Rule(Match(message=r"No space left on device"), Escalate("disk_full"), name="default.disk_full"),
    Rule(Match(exceptions=DATABASE_ERRORS), RestartChild(), name="default.database_connection"),
    Rule(Match(exceptions=NETWORK_ERRORS), DEFAULT_RETRY, name="default.network"),
)

#: The names of the built-in rules (a decision by one of them may be overridden by a lesson).
DEFAULT_RULE_NAMES: frozenset[str] = frozenset(r.name for r in DEFAULT_RULES if r.name is not None)


def _spec_name(spec: ExceptionSpec) -> str:
    return spec if isinstance(spec, str) else f"{spec.__module__}.{spec.__qualname__}"


def rules_table(rules: Sequence[Rule] = DEFAULT_RULES) -> str:
    """``rules`` as a Markdown table (name, criteria, action), in the order they are tried."""
    lines = ["| Rule | Match | Action |", "|---|---|---|"]
    for rule in rules:
        match = rule.match
        criteria = []
        if match.exceptions:
            criteria.append("exceptions: " + ", ".join(f"`{_spec_name(s)}`" for s in match.exceptions))
        if match.pattern is not None:
            criteria.append(f"message ~ `{match.pattern.pattern}`")
        for key in ("task", "domain", "failure_class"):
            value = getattr(match, key)
            if value is not None:
                criteria.append(f"{key}: `{value}`")
        lines.append(f"| `{rule.name}` | {'; '.join(criteria) or 'any failure'} | `{rule.action}` |")
    return "\n".join(lines)
