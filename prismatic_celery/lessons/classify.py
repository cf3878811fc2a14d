"""Classify a crash into one of four failure classes, from its class hierarchy and message.

Checked in this order, first answer wins:

1. **User overrides**: a mapping of exception class (or dotted name) to failure class. The most
   specific class in the exception's MRO that has an override wins, so subclasses match.
2. **Class hierarchy**: ``MemoryError`` and ``OSError`` with errno ENOSPC/EMFILE/ENFILE/ENOMEM/
   EDQUOT -> ``resource_exhaustion``; ``AssertionError`` and ``*IntegrityError`` ->
   ``state_corruption``; ``ConnectionError``, ``TimeoutError``, ``socket`` and ``ssl`` errors,
   well-known third-party connection/timeout errors by name (requests, httpx, urllib3, redis,
   kombu, amqp, psycopg, SQLAlchemy ``OperationalError``, botocore, aiohttp, pybreaker, Celery
   time limits) and any ``status_code``/``status`` of 5xx or 429 -> ``external_dependency``;
   Celery's ``WorkerLostError`` by SIGKILL (the OOM killer's signal) -> ``resource_exhaustion``.
3. **Message**: "Too many open files", "No space left on device", "Cannot allocate memory", "out
   of memory" -> ``resource_exhaustion``; connection refused/reset, timed out, "503 Service
   Unavailable", "Bad Gateway"... -> ``external_dependency``; "invariant", "inconsistent",
   "corrupt", "integrity" -> ``state_corruption``. Messages of programming errors
   (``LookupError``, ``AttributeError``, ``NameError``, ``TypeError``, ``ImportError``) are not
   read: ``KeyError('timeout')`` is a missing key, not a timeout.
4. The explicit cause (``raise X from cause``) is classified the same way when the exception
   itself says nothing; otherwise ``logic_error``.

:func:`classify` never raises; :func:`parse_overrides` validates overrides at start-up.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ..validate import as_choice, as_class

__all__ = [
    "EXTERNAL_DEPENDENCY",
    "FAILURE_CLASSES",
    "LOGIC_ERROR",
    "RESOURCE_EXHAUSTION",
    "STATE_CORRUPTION",
    "Overrides",
    "classify",
    "parse_overrides",
]

STATE_CORRUPTION = "state_corruption"
EXTERNAL_DEPENDENCY = "external_dependency"
RESOURCE_EXHAUSTION = "resource_exhaustion"
LOGIC_ERROR = "logic_error"
FAILURE_CLASSES: tuple[str, ...] = (STATE_CORRUPTION, EXTERNAL_DEPENDENCY, RESOURCE_EXHAUSTION, LOGIC_ERROR)

#: Exception class or dotted class name (``"builtins.KeyError"``, ``"KeyError"``) -> failure class.
Overrides = Mapping[type[BaseException] | str, str]

_RESOURCE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EMFILE", "ENFILE", "ENOMEM", "EDQUOT") if hasattr(errno, name)
)
_EXTERNAL_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
                 "ENETDOWN", "EHOSTDOWN")
    if hasattr(errno, name)
)

# Third-party errors known by their qualified name (the libraries need not be installed).
_EXTERNAL_NAMES = frozenset({
    "requests.exceptions.ConnectionError", "requests.exceptions.Timeout", "requests.exceptions.RetryError",
    "httpx.TransportError", "httpx.TimeoutException", "httpx.NetworkError", "httpx.ConnectError",
    "urllib3.exceptions.HTTPError", "urllib3.exceptions.TimeoutError", "urllib3.exceptions.MaxRetryError",
    "urllib3.exceptions.ProtocolError", "urllib3.exceptions.NewConnectionError",
    "redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError", "redis.exceptions.BusyLoadingError",
    "kombu.exceptions.OperationalError", "amqp.exceptions.ConnectionError",
    "amqp.exceptions.RecoverableConnectionError",
    "psycopg2.OperationalError", "psycopg.OperationalError", "sqlalchemy.exc.OperationalError",
    "sqlalchemy.exc.DisconnectionError", "sqlalchemy.exc.TimeoutError", "pymysql.err.OperationalError",
    "MySQLdb.OperationalError", "pymongo.errors.ConnectionFailure", "pymongo.errors.ServerSelectionTimeoutError",
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
_STATE_NAMES = ("IntegrityError",)
_PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (LookupError, AttributeError, NameError, TypeError, ImportError)

_RESOURCE_MESSAGE = re.compile(
    r"too many open files|no space left on device|cannot allocate memory|out of memory|disk quota exceeded"
    r"|\b(?:ENOSPC|EMFILE|ENFILE|ENOMEM|EDQUOT)\b|memory ?error|disk (?:is )?full",
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
    r"|max retries exceeded|remote end closed connection|\bECONN(?:REFUSED|RESET|ABORTED)\b|\bETIMEDOUT\b",
    re.IGNORECASE,
)
_STATE_MESSAGE = re.compile(
    r"\binvariants?\b|\binconsisten(?:t|cy|cies)\b|\bcorrupt(?:ed|ion)?\b|\bintegrity\b|checksum mismatch",
    re.IGNORECASE,
)


def _qualified(cls: type) -> str:
    module = getattr(cls, "__module__", "") or ""
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def parse_overrides(
    value: Any, *, setting: str = "prismatic_failure_class_overrides"
) -> dict[type[BaseException] | str, str]:
    """Validate overrides at start-up: keys are exception classes or importable dotted names.

    Raises :class:`~prismatic_celery.errors.ConfigurationError` naming ``setting``. Dotted
    names that cannot be imported here are kept as names (matched by qualified name), so an
    override for an optional dependency does not require installing it.
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, f"expected a mapping of exception class -> failure class, got {value!r}")
    parsed: dict[type[BaseException] | str, str] = {}
    for key, klass in value.items():
        label = f"{setting}[{key!r}]"
        failure_class = as_choice(label, klass, FAILURE_CLASSES)
        if isinstance(key, str):
            if not key.strip():
                raise ConfigurationError(label, "an exception class name must not be empty")
            try:
                parsed[as_class(label, key, BaseException)] = failure_class
            except ConfigurationError:
                parsed[key] = failure_class  # not importable here: matched by its dotted name
        elif isinstance(key, type) and issubclass(key, BaseException):
            parsed[key] = failure_class
        else:
            raise ConfigurationError(label, f"keys must be exception classes or dotted names, got {key!r}")
    return parsed


def _override(cls: type[BaseException], overrides: Overrides) -> str | None:
    for base in cls.__mro__:
        names = (_qualified(base), base.__qualname__)
        for key, failure_class in overrides.items():
            if failure_class not in FAILURE_CLASSES:
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


def _by_class(exc: BaseException) -> str | None:
    if isinstance(exc, MemoryError):
        return RESOURCE_EXHAUSTION
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return RESOURCE_EXHAUSTION
    if isinstance(exc, AssertionError):
        return STATE_CORRUPTION
    mro = type(exc).__mro__
    if any(cls.__name__.endswith(_STATE_NAMES) for cls in mro):
        return STATE_CORRUPTION
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror, socket.herror, ssl.SSLError)):
        return EXTERNAL_DEPENDENCY
    if isinstance(exc, OSError) and exc.errno in _EXTERNAL_ERRNOS:
        return EXTERNAL_DEPENDENCY
    for cls in mro:
        if _qualified(cls) in _EXTERNAL_NAMES or cls.__name__.endswith(_EXTERNAL_SUFFIXES):
            return EXTERNAL_DEPENDENCY
    status = _status(exc)
    if status is not None and (500 <= status <= 599 or status == 429):
        return EXTERNAL_DEPENDENCY
    if any(cls.__name__ == "WorkerLostError" for cls in mro):
        text = _text(exc)
        if "SIGKILL" in text or "signal 9" in text:
            return RESOURCE_EXHAUSTION
    return None


def _text(exc: BaseException) -> str:
    try:
        return str(exc)[:4000]
    except Exception:  # a broken __str__ must not break classification
        return ""


def _by_message(exc: BaseException) -> str | None:
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


def classify(exc: BaseException, *, overrides: Overrides | None = None) -> str:
    """One of :data:`FAILURE_CLASSES` for ``exc`` (see the module docstring for the rules)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 5:
        seen.add(id(current))
        if overrides:
            found = _override(type(current), overrides)
            if found is not None:
                return found
        found = _by_class(current) or _by_message(current)
        if found is not None:
            return found
        current = current.__cause__
    return LOGIC_ERROR
