"""Classification: class hierarchy first, then the message, with user overrides checked before both."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded, WorkerLostError

from prismatic_celery.errors import ConfigurationError
from prismatic_celery.lessons.classify import (
    EXTERNAL_DEPENDENCY,
    LOGIC_ERROR,
    RESOURCE_EXHAUSTION,
    STATE_CORRUPTION,
    classify,
    parse_overrides,
)


def foreign(module: str, name: str, base: type[BaseException] = Exception, **attrs: Any) -> type[BaseException]:
    """A class that looks like a third-party library's (that library need not be installed)."""
    return type(name, (base,), {"__module__": module, **attrs})


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"request failed with status {status_code}")
        self.status_code = status_code


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class ClientError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__("upstream error")
        self.response = Response(status_code)


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


CASES: list[tuple[str, BaseException, str]] = [
    ("ConnectionRefusedError", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), EXTERNAL_DEPENDENCY),
    ("builtin TimeoutError", TimeoutError("read timed out"), EXTERNAL_DEPENDENCY),
    ("socket.gaierror", socket.gaierror(-2, "Name or service not known"), EXTERNAL_DEPENDENCY),
    ("OSError ETIMEDOUT", OSError(errno.ETIMEDOUT, "Connection timed out"), EXTERNAL_DEPENDENCY),
    ("status_code 503 attribute", HTTPError(503), EXTERNAL_DEPENDENCY),
    ("response.status_code 502", ClientError(502), EXTERNAL_DEPENDENCY),
    ("status 429", HTTPError(429), EXTERNAL_DEPENDENCY),
    ("message 503 Service Unavailable", RuntimeError("503 Service Unavailable"), EXTERNAL_DEPENDENCY),
    ("requests-style 502 Server Error", RuntimeError("502 Server Error: Bad Gateway for url: x"), EXTERNAL_DEPENDENCY),
    ("requests ConnectionError by name", foreign("requests.exceptions", "ConnectionError")("x"), EXTERNAL_DEPENDENCY),
    ("redis TimeoutError by name", foreign("redis.exceptions", "TimeoutError")("x"), EXTERNAL_DEPENDENCY),
    ("sqlalchemy OperationalError by name", foreign("sqlalchemy.exc", "OperationalError")("x"), EXTERNAL_DEPENDENCY),
    ("any *ConnectError by name", foreign("acme.net", "UpstreamConnectError")("x"), EXTERNAL_DEPENDENCY),
    ("Celery soft time limit", SoftTimeLimitExceeded(), EXTERNAL_DEPENDENCY),
    ("message connection reset", RuntimeError("Connection reset by peer"), EXTERNAL_DEPENDENCY),
    ("MemoryError", MemoryError(), RESOURCE_EXHAUSTION),
    ("OSError EMFILE", OSError(errno.EMFILE, "Too many open files"), RESOURCE_EXHAUSTION),
    ("OSError ENOSPC", OSError(errno.ENOSPC, "No space left on device"), RESOURCE_EXHAUSTION),
    ("message too many open files", RuntimeError("socket(): Too many open files"), RESOURCE_EXHAUSTION),
    ("message cannot allocate memory", RuntimeError("fork failed: Cannot allocate memory"), RESOURCE_EXHAUSTION),
    ("EMFILE beats ConnectionError", ConnectionError(errno.EMFILE, "Too many open files"), RESOURCE_EXHAUSTION),
    ("worker killed by SIGKILL", WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3."),
     RESOURCE_EXHAUSTION),
    ("AssertionError", AssertionError("x"), STATE_CORRUPTION),
    ("message invariant", RuntimeError("invariant violated: balance < 0"), STATE_CORRUPTION),
    ("message inconsistent", ValueError("inconsistent state between cache and db"), STATE_CORRUPTION),
    ("message corrupt", RuntimeError("checksum mismatch: page corrupted"), STATE_CORRUPTION),
    ("IntegrityError by name", foreign("sqlalchemy.exc", "IntegrityError")("duplicate key"), STATE_CORRUPTION),
    ("plain ValueError", ValueError("invalid literal for int() with base 10: 'x'"), LOGIC_ERROR),
    ("ZeroDivisionError", ZeroDivisionError("division by zero"), LOGIC_ERROR),
    ("KeyError('timeout') is a missing key", KeyError("timeout"), LOGIC_ERROR),
    ("AttributeError mentioning corrupt", AttributeError("'Page' object has no attribute 'corrupt'"), LOGIC_ERROR),
    ("status_code 404", HTTPError(404), LOGIC_ERROR),
    ("numbers that are not statuses", RuntimeError("processed 503 rows"), LOGIC_ERROR),
    ("worker lost otherwise", WorkerLostError("Worker exited prematurely: exitcode 1."), LOGIC_ERROR),
    ("wrapper raised from a connection error", chained(RuntimeError("sync failed"), ConnectionResetError()),
     EXTERNAL_DEPENDENCY),
    ("wrapper with an ordinary cause", chained(RuntimeError("sync failed"), ValueError("bad")), LOGIC_ERROR),
]


def test_there_are_enough_cases() -> None:
    """The brief asks for 20+ classification cases."""
    assert len(CASES) >= 20


@pytest.mark.parametrize(("case", "exc", "expected"), CASES, ids=[c[0] for c in CASES])
def test_classification(case: str, exc: BaseException, expected: str) -> None:
    """Each exception lands in its failure class."""
    assert classify(exc) == expected, case


def test_overrides_match_subclasses() -> None:
    """An override for a class applies to its subclasses too."""

    class CardDeclined(ValueError):
        pass

    assert classify(CardDeclined("x"), overrides={ValueError: EXTERNAL_DEPENDENCY}) == EXTERNAL_DEPENDENCY


def test_overrides_are_checked_before_the_builtin_rules() -> None:
    """A user can reclassify even MemoryError or a connection error."""
    assert classify(MemoryError(), overrides={MemoryError: LOGIC_ERROR}) == LOGIC_ERROR
    assert classify(ConnectionError(), overrides={"ConnectionError": STATE_CORRUPTION}) == STATE_CORRUPTION


def test_the_most_specific_override_wins() -> None:
    """With overrides for a class and its base, the closer class in the MRO decides, whatever the order."""
    overrides = {Exception: LOGIC_ERROR, OSError: RESOURCE_EXHAUSTION}
    assert classify(ConnectionResetError(), overrides=overrides) == RESOURCE_EXHAUSTION
    assert classify(KeyError("k"), overrides=overrides) == LOGIC_ERROR


def test_overrides_by_dotted_name_match_classes_not_installed_here() -> None:
    """A dotted name matches by qualified name, so the library need not be importable."""
    flaky = foreign("acme.errors", "Flaky")
    overrides = parse_overrides({"acme.errors.Flaky": "external_dependency", "builtins.KeyError": "state_corruption"})
    assert classify(flaky("x"), overrides=overrides) == EXTERNAL_DEPENDENCY
    assert classify(KeyError("x"), overrides=overrides) == STATE_CORRUPTION
    assert classify(ValueError("x"), overrides=overrides) == LOGIC_ERROR


def test_parse_overrides_rejects_bad_configuration_naming_the_setting() -> None:
    """A bad failure class or key fails at start-up with an error naming the setting."""
    with pytest.raises(ConfigurationError, match="prismatic_failure_class_overrides"):
        parse_overrides({ValueError: "flaky"})
    with pytest.raises(ConfigurationError, match="did you mean 'logic_error'"):
        parse_overrides({ValueError: "logic_eror"})
    with pytest.raises(ConfigurationError):
        parse_overrides({42: "logic_error"})
    with pytest.raises(ConfigurationError):
        parse_overrides(["ValueError"])
    assert parse_overrides({"ValueError": "logic_error"}) == {ValueError: "logic_error"}


def test_classify_never_raises() -> None:
    """A broken __str__ or an invalid override value cannot make classification fail."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    assert classify(Unprintable()) == LOGIC_ERROR
    assert classify(ValueError("x"), overrides={ValueError: "nonsense"}) == LOGIC_ERROR
    loop = RuntimeError("a")
    loop.__cause__ = loop
    assert classify(loop) == LOGIC_ERROR
