"""Classify a crash into one of four failure classes, from its class hierarchy and message.

Checked in this order, first answer wins; each step is tried on the exception, then (4) on its cause:

1. **User overrides**: a mapping of exception class (or dotted name) to failure class. The most
   specific class in the exception's MRO that has an override wins, so subclasses match. Overrides
   win over every rule below.
2. **Class hierarchy**, by class or by qualified name (``module.QualName`` over the MRO, so no
   third-party library is imported or needs to be installed), in this order:

   a. ``resource_exhaustion``: ``MemoryError``; ``OSError`` with errno ENOSPC/EMFILE/ENFILE/ENOMEM/
      EDQUOT/ENOBUFS; Redis ``OutOfMemoryError`` and ``MaxConnectionsError``; connection-pool limits
      (SQLAlchemy ``TimeoutError``, which SQLAlchemy raises only for a pool checkout, psycopg_pool
      ``PoolTimeout``/``TooManyRequests``, urllib3 ``EmptyPoolError``, httpx/httpcore ``PoolTimeout``,
      pymongo ``WaitQueueTimeoutError``, kombu ``LimitExceeded``, amqp ``ResourceError``); Postgres
      "insufficient resources" errors (psycopg2/psycopg/asyncpg ``DiskFull``, ``OutOfMemory``,
      ``TooManyConnections``..., or any SQLSTATE of class 53); SQLite ``SQLITE_FULL``/``SQLITE_NOMEM``;
      Celery's ``WorkerLostError`` by SIGKILL (the OOM killer's signal).
   b. ``state_corruption``: ``AssertionError``; stored data that no longer decodes: ``pickle``'s
      ``UnpicklingError``, ``zlib.error``, ``lzma.LZMAError``, ``gzip.BadGzipFile``,
      ``zipfile.BadZipFile``, ``tarfile.ReadError``, ``binascii.Error`` (base64/hex); a corrupt
      database (SQLite ``SQLITE_CORRUPT``/``SQLITE_NOTADB``: "file is not a database", "database disk
      image is malformed"; Postgres SQLSTATE XX001/XX002); any class in the MRO whose name ends in
      Error, Exception, Violation, Failure, Mismatch or Corrupted and contains Integrity, Invariant,
      Consistency, Inconsisten(t|cy), Corrupt, Checksum, CRC, OutOfSync or Stale followed by State,
      Data, Object or Version (``IntegrityError``, ``InvariantViolation``, ``ConsistencyError``,
      kombu's ``InconsistencyError``, ``CorruptionError``, ``ChecksumError``, SQLAlchemy's
      ``StaleDataError``, psycopg2's ``DataCorrupted``...; not ``StaleElementReferenceException``).
   c. ``external_dependency``, a read-only replica during a failover: Redis ``ReadOnlyError``,
      psycopg2/psycopg ``ReadOnlySqlTransaction``, asyncpg ``ReadOnlySQLTransactionError``,
      SQLSTATE 25006.
   d. Connection and timeout classes: ``ConnectionError``, ``TimeoutError``, ``socket`` and ``ssl``
      errors, ``OSError`` with errno ECONNREFUSED/ECONNRESET/ETIMEDOUT/EHOSTUNREACH/ESTALE...,
      well-known third-party connection/timeout errors by name (requests, httpx, urllib3, redis
      including ``ClusterDownError``/``MasterDownError``/``TryAgainError``, kombu, amqp, psycopg,
      SQLAlchemy/pymysql/MySQLdb ``OperationalError``, pymongo, botocore, aiohttp, pybreaker,
      Celery time limits) and any class name ending in ConnectionError, TimeoutError, Timeout...
      are ``external_dependency`` **unless their message speaks of exhaustion** (step 3's
      exhaustion vocabulary: "Too many connections", "max number of clients reached", "sorry, too
      many clients already", "pool exhausted", "No connection available"...), which makes them
      ``resource_exhaustion``: a full server or pool is not an outage, whatever class reports it.
   e. A ``status_code``/``status`` of 5xx or 429 (on the exception or its ``response``) ->
      ``external_dependency``.
3. **Message** (its first 1000 characters), in this order:

   * ``resource_exhaustion``: "Too many open files", "No space left on device", "Cannot allocate
     memory", "out of (shared) memory", "MemoryError", "disk quota exceeded", "disk (is) full", the
     errno names ENOSPC/EMFILE/ENFILE/ENOMEM/EDQUOT, Redis "OOM command not allowed"/"maxmemory",
     "Too many (open) connections", "too many clients", "max number of clients/connections
     reached", "connection slots are reserved", "max_user_connections", "pool (is) exhausted/full",
     "QueuePool limit of size N overflow M", "No connection available".
   * ``external_dependency``: connection refused/reset/closed/lost, timed out, "503 Service
     Unavailable", "Bad Gateway", name resolution failures, "can't connect to"...; a read-only
     replica or standby ("read only replica", "in a read-only transaction", MySQL's "--read-only
     option", MariaDB's "Running in read-only mode"); Redis "MASTERDOWN"/"CLUSTERDOWN"/"is loading the
     dataset".
   * ``state_corruption``: "invariant", "inconsistent", "corrupt(ed|ion)", "integrity", "stale",
     "out of sync", "checksum/CRC/hash/digest mismatch" or "... check failed", "mismatched
     state/checksum", "state mismatch"; Redis "WRONGTYPE ... wrong kind of value"; "file is not a
     database", "database disk image is malformed"; a stored blob that no longer decodes ("invalid
     load key", "pickle data was truncated", "Ran out of input", "bad marshal data", "marshal data
     too short", bz2's "Invalid data stream", "ended before the end-of-stream marker", "incorrect
     header check", "Incorrect padding").

   Messages of programming errors (``LookupError``, ``AttributeError``, ``NameError``,
   ``TypeError``, ``ImportError``) are not read: ``KeyError('timeout')`` is a missing key, not a
   timeout.
4. The explicit cause (``raise X from cause``) is classified the same way when the exception itself
   says nothing (up to 5 exceptions down the chain); otherwise ``logic_error``.

A bare ``json.JSONDecodeError`` or ``UnicodeDecodeError`` is ``logic_error``: text formats are read
from requests, payloads and API answers as often as from storage, and the exception cannot tell
which. Binary serializations and compressed streams (pickle, marshal, zlib, lzma, gzip, bz2, zip,
tar, base64/hex) are almost always bytes a program wrote earlier, so failing to decode them means
stored data is damaged. To classify a text decode error as state corruption, raise your own error
from it (``raise CacheCorruptionError(key) from exc``: its name decides) or add an override.

:func:`classify` never raises; :func:`~prismatic_celery.remediation.rules.parse_overrides` validates
overrides at start-up.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Mapping

from ..describe import exception_text
from ..remediation.rules import (
    EXTERNAL_DEPENDENCY,
    FAILURE_CLASSES,
    LOGIC_ERROR,
    RESOURCE_EXHAUSTION,
    STATE_CORRUPTION,
    FailureClass,
)

__all__ = [
    "EXTERNAL_DEPENDENCY",
    "FAILURE_CLASSES",
    "LOGIC_ERROR",
    "RESOURCE_EXHAUSTION",
    "STATE_CORRUPTION",
    "Overrides",
    "classify",
]

#: Exception class or dotted class name (``"builtins.KeyError"``, ``"KeyError"``) -> failure class.
Overrides = Mapping[type[BaseException] | str, str]

#: Each failure class by its name (a validated override value becomes its precise type).
_BY_NAME: Mapping[str, FailureClass] = {name: name for name in FAILURE_CLASSES}

#: How much of a message is read.
_MESSAGE_LIMIT = 1000
#: How many exceptions of a ``__cause__`` chain are classified.
_CHAIN_LIMIT = 5


def _errnos(*names: str) -> frozenset[int]:
    return frozenset(getattr(errno, name) for name in names if hasattr(errno, name))


_RESOURCE_ERRNOS = _errnos("ENOSPC", "EMFILE", "ENFILE", "ENOMEM", "EDQUOT", "ENOBUFS")
_EXTERNAL_ERRNOS = _errnos("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH",
                           "ENETUNREACH", "ENETDOWN", "EHOSTDOWN", "ESTALE")

# Third-party (and a few stdlib) errors known by their qualified name: the libraries need not be installed.
_PG_RESOURCE = ("InsufficientResources", "DiskFull", "OutOfMemory", "TooManyConnections", "ConfigurationLimitExceeded")
_RESOURCE_NAMES = frozenset({
    "redis.exceptions.OutOfMemoryError", "redis.exceptions.MaxConnectionsError",
    "sqlalchemy.exc.TimeoutError",  # SQLAlchemy raises it only when a pool checkout times out
    "psycopg_pool.errors.PoolTimeout", "psycopg_pool.errors.TooManyRequests",
    "psycopg_pool.PoolTimeout", "psycopg_pool.TooManyRequests",
    "urllib3.exceptions.EmptyPoolError", "httpx.PoolTimeout", "httpcore.PoolTimeout",
    "pymongo.errors.WaitQueueTimeoutError", "kombu.exceptions.LimitExceeded", "amqp.exceptions.ResourceError",
    *(f"{module}.{name}" for module in ("psycopg2.errors", "psycopg.errors") for name in _PG_RESOURCE),
    *(f"asyncpg.exceptions.{name}Error" for name in _PG_RESOURCE),
})
_STATE_NAMES = frozenset({
    "_pickle.UnpicklingError", "pickle.UnpicklingError", "zlib.error", "_lzma.LZMAError", "lzma.LZMAError",
    "gzip.BadGzipFile", "zipfile.BadZipFile", "tarfile.ReadError", "binascii.Error",
})
_READ_ONLY_NAMES = frozenset({
    "redis.exceptions.ReadOnlyError", "psycopg2.errors.ReadOnlySqlTransaction",
    "psycopg.errors.ReadOnlySqlTransaction", "asyncpg.exceptions.ReadOnlySQLTransactionError",
})
_EXTERNAL_NAMES = frozenset({
    "requests.exceptions.ConnectionError", "requests.exceptions.Timeout", "requests.exceptions.RetryError",
    "httpx.TransportError", "httpx.TimeoutException", "httpx.NetworkError", "httpx.ConnectError",
    "urllib3.exceptions.HTTPError", "urllib3.exceptions.TimeoutError", "urllib3.exceptions.MaxRetryError",
    "urllib3.exceptions.ProtocolError", "urllib3.exceptions.NewConnectionError",
    "redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError", "redis.exceptions.BusyLoadingError",
    "redis.exceptions.ClusterDownError", "redis.exceptions.TryAgainError",
    "kombu.exceptions.OperationalError", "amqp.exceptions.ConnectionError",
    "amqp.exceptions.RecoverableConnectionError",
    "psycopg2.OperationalError", "psycopg.OperationalError", "sqlalchemy.exc.OperationalError",
    "sqlalchemy.exc.DisconnectionError", "pymysql.err.OperationalError",
    "MySQLdb.OperationalError", "MySQLdb._exceptions.OperationalError",
    "pymongo.errors.ConnectionFailure", "pymongo.errors.ServerSelectionTimeoutError",
    "botocore.exceptions.EndpointConnectionError", "botocore.exceptions.ConnectionError",
    "botocore.exceptions.ConnectTimeoutError", "botocore.exceptions.ReadTimeoutError",
    "aiohttp.client_exceptions.ClientConnectionError", "aiohttp.client_exceptions.ServerTimeoutError",
    "grpc.RpcError", "pybreaker.CircuitBreakerError", "elasticsearch.exceptions.ConnectionError",
    "billiard.exceptions.TimeLimitExceeded", "billiard.exceptions.SoftTimeLimitExceeded",
    "celery.exceptions.TimeLimitExceeded", "celery.exceptions.SoftTimeLimitExceeded",
})
# Class-name endings that mean "the other side did not answer" in most libraries.
_EXTERNAL_SUFFIXES = ("ConnectionError", "ConnectError", "TimeoutError", "Timeout", "TimeoutException",
                      "NetworkError", "ServiceUnavailable", "ConnectionRefused", "ConnectionFailure")
_EXTERNAL_CLASSES: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, socket.timeout, socket.gaierror, socket.herror, ssl.SSLError,
)
# An error class named for broken state: IntegrityError, InvariantViolation, CacheConsistencyError,
# DataCorrupted, FlexibleChecksumError, StaleDataError... (not StaleElementReferenceException).
_STATE_CLASS_NAME = re.compile(
    r"^(?=\w*(?:Integrity|Invariant|Consistency|Inconsisten|Corrupt|Checksum|CRC|OutOfSync"
    r"|Stale(?:State|Data|Object|Version)))\w*(?:Error|Exception|Violation|Failure|Mismatch|Corrupted)$"
)
_PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (LookupError, AttributeError, NameError, TypeError, ImportError)

# Database error codes: SQLSTATE (psycopg2 ``pgcode``, psycopg/asyncpg/mysql-connector ``sqlstate``) and
# SQLite's ``sqlite_errorname`` (Python 3.11+).
_RESOURCE_CODES = ("53", "SQLITE_FULL", "SQLITE_NOMEM", "SQLITE_IOERR_NOMEM")  # prefixes; class 53: resources
_STATE_CODES = ("XX001", "XX002", "SQLITE_CORRUPT", "SQLITE_NOTADB")  # prefixes; XX001 data_corrupted
_READ_ONLY_CODE = "25006"  # read_only_sql_transaction

_RESOURCE_MESSAGE = re.compile(
    r"too many open files|no space left on device|cannot allocate memory|out of (?:shared )?memory"
    r"|disk quota exceeded|\b(?:ENOSPC|EMFILE|ENFILE|ENOMEM|EDQUOT)\b|memory ?error|disk (?:is )?full"
    r"|\bOOM command not allowed|\bmaxmemory\b"
    r"|too many (?:open )?(?:connections|clients)|max(?:imum)? number of (?:clients|connections) reached"
    r"|connection slots are reserved|max_user_connections"
    r"|\bpool (?:is )?(?:exhausted|full)\b|pool limit of size \d+ overflow|\bno connection available\b",
    re.IGNORECASE,
)
_EXTERNAL_MESSAGE = re.compile(
    r"connection (?:was )?(?:refused|reset|aborted|closed|timed out|lost|error)|\btimed out\b"
    r"|\b(?:read|write|connect|connection|request|socket|operation|gateway|network|response) ?time-?out\b"
    r"|\btime-?out (?:error|exceeded|expired|occurred|reached|while|waiting|after)\b|deadline exceeded"
    r"|\b(?:5\d\d|429)\b[\s:,-]*(?:server error|internal server error|bad gateway|service unavailable"
    r"|gateway time-?out|too many requests)"
    r"|\b(?:http|status(?: code)?|response)\W{0,3}(?:5\d\d|429)\b"
    r"|service (?:temporarily )?unavailable|bad gateway|internal server error"
    r"|name or service not known|temporary failure in name resolution|nodename nor servname"
    r"|network is unreachable|no route to host|could not connect|failed to establish a new connection"
    r"|\b(?:can'?t|cannot|unable to) connect to\b"
    r"|max retries exceeded|remote end closed connection|\bECONN(?:REFUSED|RESET|ABORTED)\b|\bETIMEDOUT\b"
    r"|read[- ]only replica|\bin a read-only transaction\b|--(?:super-)?read-only option|running in read-only mode"
    r"|\b(?:MASTERDOWN|CLUSTERDOWN)\b|link with master is down|is loading the dataset",
    re.IGNORECASE,
)
_STATE_MESSAGE = re.compile(
    r"\binvariants?\b|\binconsisten(?:t|cy|cies)\b|\bcorrupt(?:ed|ion)?\b|\bintegrity\b|\bstale\b"
    r"|\bout[- ]of[- ]sync\b|\b(?:checksum|crc(?:-?32)?|hash|digest) (?:mismatch|check failed)"
    r"|\bmismatch(?:ed)? (?:state|checksum|crc|hash|digest)|\bstate mismatch"
    r"|\bWRONGTYPE\b|wrong kind of value|file is not a database|database disk image is malformed"
    r"|invalid load key|pickle data was truncated|ran out of input|bad marshal data|marshal data too short"
    r"|invalid data stream|ended before the end-of-stream marker|incorrect header check|incorrect padding",
    re.IGNORECASE,
)


def _qualified(cls: type) -> str:
    module = getattr(cls, "__module__", "") or ""
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _override(cls: type[BaseException], overrides: Overrides) -> FailureClass | None:
    for base in cls.__mro__:
        names = (_qualified(base), base.__qualname__)
        for key, value in overrides.items():
            failure_class = _BY_NAME.get(value)
            if failure_class is None:
                continue  # invalid values are rejected by parse_overrides; never raise here
            if key is base or (isinstance(key, str) and key in names):
                return failure_class
    return None


def _status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attribute in ("status_code", "status"):
            value = getattr(holder, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _db_code(exc: BaseException) -> str:
    """The SQLSTATE or SQLite error name a database driver attached, else ``""``."""
    for attribute in ("sqlstate", "pgcode", "sqlite_errorname"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _text(exc: BaseException) -> str:
    return exception_text(exc, limit=_MESSAGE_LIMIT, fallback="")


def _by_class(exc: BaseException) -> FailureClass | None:
    mro = type(exc).__mro__
    names = {_qualified(cls) for cls in mro}
    code = _db_code(exc)
    os_errno = exc.errno if isinstance(exc, OSError) else None
    if (isinstance(exc, MemoryError) or os_errno in _RESOURCE_ERRNOS or not names.isdisjoint(_RESOURCE_NAMES)
            or code.startswith(_RESOURCE_CODES)):
        return RESOURCE_EXHAUSTION
    if any(cls.__name__ == "WorkerLostError" for cls in mro):
        text = _text(exc)
        if "SIGKILL" in text or "signal 9" in text:
            return RESOURCE_EXHAUSTION
    if (isinstance(exc, AssertionError) or not names.isdisjoint(_STATE_NAMES) or code.startswith(_STATE_CODES)
            or any(_STATE_CLASS_NAME.match(cls.__name__) for cls in mro)):
        return STATE_CORRUPTION
    if not names.isdisjoint(_READ_ONLY_NAMES) or code == _READ_ONLY_CODE:
        return EXTERNAL_DEPENDENCY
    if (isinstance(exc, _EXTERNAL_CLASSES) or os_errno in _EXTERNAL_ERRNOS or not names.isdisjoint(_EXTERNAL_NAMES)
            or any(cls.__name__.endswith(_EXTERNAL_SUFFIXES) for cls in mro)):
        # A full server or pool is reported by connection classes too ("Too many connections").
        return RESOURCE_EXHAUSTION if _RESOURCE_MESSAGE.search(_text(exc)) else EXTERNAL_DEPENDENCY
    status = _status(exc)
    if status is not None and (500 <= status <= 599 or status == 429):
        return EXTERNAL_DEPENDENCY
    return None


def _by_message(exc: BaseException) -> FailureClass | None:
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return None
    text = _text(exc)
    if _RESOURCE_MESSAGE.search(text):
        return RESOURCE_EXHAUSTION
    if _EXTERNAL_MESSAGE.search(text):
        return EXTERNAL_DEPENDENCY
    if _STATE_MESSAGE.search(text):
        return STATE_CORRUPTION
    return None


def _classify_one(exc: BaseException, overrides: Overrides | None) -> FailureClass | None:
    try:
        if overrides:
            found = _override(type(exc), overrides)
            if found is not None:
                return found
        return _by_class(exc) or _by_message(exc)
    except Exception:  # an exception with hostile attributes must not break classification
        return None


def classify(exc: BaseException, *, overrides: Overrides | None = None) -> FailureClass:
    """One of :data:`FAILURE_CLASSES` for ``exc`` (see the module docstring for the rules)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        found = _classify_one(current, overrides)
        if found is not None:
            return found
        current = current.__cause__
    return LOGIC_ERROR
