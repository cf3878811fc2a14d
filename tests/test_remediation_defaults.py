"""The default rules: which action each common failure gets out of the box."""

from __future__ import annotations

import errno
import socket
import sys

import amqp.exceptions
import kombu.exceptions
import pytest
import redis.exceptions
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from prismatic_celery.remediation import (
    DEFAULT_RETRY,
    DEFAULT_RULES,
    Action,
    Escalate,
    RecycleProcess,
    RemediationRegistry,
    RestartChild,
    rules_table,
)


def named(dotted: str, *bases: type[BaseException]) -> type[Exception]:
    """A local class whose ``module.QualName`` is ``dotted``, standing in for a library not installed."""
    module, _, qualname = dotted.rpartition(".")
    return type(qualname, bases or (Exception,), {"__module__": module, "__qualname__": qualname})


# Hierarchies as the real libraries declare them (only names and bases matter).
RequestException = named("requests.exceptions.RequestException", OSError)
RequestsConnectionError = named("requests.exceptions.ConnectionError", RequestException)
RequestsTimeout = named("requests.exceptions.Timeout", RequestException)
RequestsConnectTimeout = named("requests.exceptions.ConnectTimeout", RequestsConnectionError, RequestsTimeout)
RequestsReadTimeout = named("requests.exceptions.ReadTimeout", RequestsTimeout)
RequestsHTTPError = named("requests.exceptions.HTTPError", RequestException)
HttpxTransportError = named("httpx.TransportError")
HttpxTimeoutException = named("httpx.TimeoutException", HttpxTransportError)
HttpxNetworkError = named("httpx.NetworkError", HttpxTransportError)
Urllib3HTTPError = named("urllib3.exceptions.HTTPError")
Urllib3TimeoutError = named("urllib3.exceptions.TimeoutError", Urllib3HTTPError)
Urllib3ConnectTimeoutError = named("urllib3.exceptions.ConnectTimeoutError", Urllib3TimeoutError)
Psycopg2Error = named("psycopg2.Error")
Psycopg2OperationalError = named("psycopg2.OperationalError", Psycopg2Error)
Psycopg2TransactionRollbackError = named("psycopg2.extensions.TransactionRollbackError", Psycopg2OperationalError)
SqlalchemyDBAPIError = named("sqlalchemy.exc.DBAPIError")
PymongoConnectionFailure = named("pymongo.errors.ConnectionFailure")
PymongoAutoReconnect = named("pymongo.errors.AutoReconnect", PymongoConnectionFailure)

RETRY: Action = DEFAULT_RETRY
RESTART: Action = RestartChild()
RECYCLE: Action = RecycleProcess()
UNKNOWN: Action = Escalate("unknown_failure_pattern")
DISK_FULL: Action = Escalate("disk_full")

TABLE: list[tuple[str, BaseException, Action]] = [
    # connection refused, resets, timeouts: retry with backoff
    ("connection refused", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), RETRY),
    ("connection reset", ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), RETRY),
    ("connection aborted", ConnectionAbortedError(), RETRY),
    ("broken pipe", BrokenPipeError(errno.EPIPE, "Broken pipe"), RETRY),
    ("plain ConnectionError", ConnectionError("lost"), RETRY),
    ("TimeoutError", TimeoutError("timed out"), RETRY),
    ("socket.timeout", socket.timeout("timed out"), RETRY),  # noqa: UP041 - the alias many libraries still raise
    ("DNS failure", socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), RETRY),
    ("redis ConnectionError", redis.exceptions.ConnectionError("Error 111 connecting"), RETRY),
    ("redis TimeoutError", redis.exceptions.TimeoutError("Timeout reading from socket"), RETRY),
    ("redis BusyLoadingError", redis.exceptions.BusyLoadingError("loading"), RETRY),
    ("kombu OperationalError", kombu.exceptions.OperationalError("[Errno 111] Connection refused"), RETRY),
    ("amqp RecoverableConnectionError", amqp.exceptions.RecoverableConnectionError("connection lost"), RETRY),
    ("amqp ConnectionForced", amqp.exceptions.ConnectionForced("shutdown"), RETRY),
    ("celery SoftTimeLimitExceeded", SoftTimeLimitExceeded(), RETRY),
    ("requests ConnectionError", RequestsConnectionError("Max retries exceeded"), RETRY),
    ("requests ConnectTimeout", RequestsConnectTimeout("connect timeout"), RETRY),
    ("requests ReadTimeout", RequestsReadTimeout("read timeout"), RETRY),
    ("httpx ConnectError", named("httpx.ConnectError", HttpxNetworkError)("All connection attempts failed"), RETRY),
    ("httpx ReadTimeout", named("httpx.ReadTimeout", HttpxTimeoutException)(""), RETRY),
    ("httpx ReadError", named("httpx.ReadError", HttpxNetworkError)(""), RETRY),
    ("urllib3 NewConnectionError", named("urllib3.exceptions.NewConnectionError", Urllib3ConnectTimeoutError)(), RETRY),
    ("urllib3 ReadTimeoutError", named("urllib3.exceptions.ReadTimeoutError", Urllib3TimeoutError)(), RETRY),
    ("urllib3 MaxRetryError", named("urllib3.exceptions.MaxRetryError", Urllib3HTTPError)(), RETRY),
    ("aiohttp ClientConnectorError", named(
        "aiohttp.client_exceptions.ClientConnectorError",
        named("aiohttp.client_exceptions.ClientConnectionError"),
    )(), RETRY),
    ("asyncio TimeoutError on 3.10", named("asyncio.exceptions.TimeoutError")(), RETRY),
    # database connections: restart the child under the default backoff
    ("psycopg2 OperationalError", Psycopg2OperationalError("server closed the connection unexpectedly"), RESTART),
    ("psycopg2 deadlock (subclass)", Psycopg2TransactionRollbackError("deadlock detected"), RESTART),
    ("psycopg2 InterfaceError", named("psycopg2.InterfaceError", Psycopg2Error)("connection already closed"),
     RESTART),
    ("psycopg 3 OperationalError", named("psycopg.OperationalError")("connection failed"), RESTART),
    ("sqlalchemy OperationalError", named("sqlalchemy.exc.OperationalError", SqlalchemyDBAPIError)(), RESTART),
    ("sqlalchemy DisconnectionError", named("sqlalchemy.exc.DisconnectionError")(), RESTART),
    ("django OperationalError", named("django.db.utils.OperationalError")(), RESTART),
    ("django InterfaceError", named("django.db.utils.InterfaceError")(), RESTART),
    ("pymysql OperationalError", named("pymysql.err.OperationalError")(2003, "Can't connect"), RESTART),
    ("mysqlclient OperationalError", named("MySQLdb._exceptions.OperationalError")(2006, "gone away"), RESTART),
    ("asyncpg ConnectionDoesNotExistError", named("asyncpg.exceptions.ConnectionDoesNotExistError")(), RESTART),
    ("pymongo AutoReconnect", named("pymongo.errors.ServerSelectionTimeoutError", PymongoAutoReconnect)(), RESTART),
    # resources
    ("MemoryError", MemoryError(), RECYCLE),
    ("EMFILE", OSError(errno.EMFILE, "Too many open files"), RECYCLE),
    ("ENFILE", OSError(errno.ENFILE, "Too many open files in system"), RECYCLE),
    ("EMFILE wrapped by requests", RequestsConnectionError("[Errno 24] Too many open files"), RECYCLE),
    ("ENOSPC", OSError(errno.ENOSPC, "No space left on device"), DISK_FULL),
    ("database server disk full", Psycopg2OperationalError("could not extend file: No space left on device"),
     DISK_FULL),
    # everything else escalates
    ("ValueError", ValueError("invalid literal"), UNKNOWN),
    ("KeyError", KeyError("id"), UNKNOWN),
    ("TypeError", TypeError("unsupported operand"), UNKNOWN),
    ("ZeroDivisionError", ZeroDivisionError(), UNKNOWN),
    ("RecursionError", RecursionError(), UNKNOWN),
    ("AssertionError", AssertionError(), UNKNOWN),
    ("FileNotFoundError", FileNotFoundError(errno.ENOENT, "No such file or directory"), UNKNOWN),
    ("PermissionError", PermissionError(errno.EACCES, "Permission denied"), UNKNOWN),
    ("requests HTTPError", RequestsHTTPError("500 Server Error"), UNKNOWN),
    ("psycopg2 IntegrityError", named("psycopg2.IntegrityError", Psycopg2Error)("duplicate key"), UNKNOWN),
    ("sqlalchemy IntegrityError", named("sqlalchemy.exc.IntegrityError", SqlalchemyDBAPIError)(), UNKNOWN),
    ("hard time limit", TimeLimitExceeded(), UNKNOWN),
    ("an app's own OperationalError", named("myapp.errors.OperationalError")(), UNKNOWN),
    ("a look-alike module", named("psycopg2x.OperationalError")(), UNKNOWN),
    ("KeyboardInterrupt", KeyboardInterrupt(), UNKNOWN),
]


@pytest.mark.parametrize(("exc", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_default_rules_choose_the_expected_action(exc: BaseException, expected: Action) -> None:
    decision = RemediationRegistry().lookup(exc, task_name="app.tasks.work", domain="core")
    assert decision.action == expected


def test_the_table_covers_at_least_35_exceptions_and_every_default_rule() -> None:
    assert len(TABLE) >= 35
    registry = RemediationRegistry()
    used = {registry.lookup(exc, task_name="t", domain=None).rule_name for _, exc, _ in TABLE}
    assert used == {rule.name for rule in DEFAULT_RULES} | {None}


def test_the_network_backoff_is_1s_doubling_to_30s_with_1s_jitter() -> None:
    assert DEFAULT_RETRY.to_json() == {"action": "retry_with_backoff", "initial_ms": 1000, "max_ms": 30_000,
                                       "jitter_ms": 1000}


def test_default_rules_import_none_of_the_libraries_they_name() -> None:
    registry = RemediationRegistry()
    before = set(sys.modules)
    for _, exc, _ in TABLE:
        registry.lookup(exc, task_name="t", domain=None)
    assert set(sys.modules) == before


def test_the_rules_table_lists_every_default_rule_in_order() -> None:
    table = rules_table()
    positions = [table.index(f"`{rule.name}`") for rule in DEFAULT_RULES]
    assert positions == sorted(positions)
    assert "`restart_child()`" in table
