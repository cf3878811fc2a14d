"""One call through a breaker: admitted (a :class:`Ticket`) or refused (:class:`CircuitOpenError`), then settled.

:func:`guarded_call` (``breaker.call``), :class:`Guard` (``with breaker.calling():``) and
:func:`tornado_call` (``breaker.call_async``) take any breaker with ``admit``, ``before_call``,
``succeeded`` and ``failed`` (a :class:`Guarded`). A generator is settled when it is exhausted or
fails, as pybreaker does.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, TypeVar, cast

import pybreaker

from ..errors import PrismaticError

__all__ = [
    "FREE", "Allowance", "CircuitOpenError", "Guard", "Guarded", "Ticket", "guarded_call", "settle_generator",
    "tornado_call",
]

T = TypeVar("T")
Y = TypeVar("Y")
S = TypeVar("S")
R = TypeVar("R")


class CircuitOpenError(PrismaticError, pybreaker.CircuitBreakerError):
    """The call was not made: the circuit is open, its one trial is taken, or (strict) its budget is.

    ``retry_after_s`` says when a call may be tried again: the time left until half-open, or
    the trial's lease (a task can be re-queued with that countdown).
    """

    def __init__(self, name: str, state: str, retry_after_s: float, message: str) -> None:
        self.name = name
        self.state = state
        self.retry_after_s = retry_after_s
        super().__init__(f"circuit {name!r} {message} (state {state}, retry after {retry_after_s:.3f}s)")


@dataclass(frozen=True)
class Allowance:
    """Whether a call is allowed now; if not, ``retry_after_s`` until one may be tried. Truthy when allowed."""

    allowed: bool
    retry_after_s: float
    state: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Ticket:
    """How a call was admitted: ``free`` (no permit held) or holding ``trial`` / ``permit`` ``token``."""

    kind: str
    token: str = ""


FREE = Ticket("free")


class Guarded(Protocol):
    """A breaker a :class:`Guard` can guard a block with."""

    def admit(self) -> Ticket:
        """May a call start (raises :class:`CircuitOpenError` when not)."""

    def before_call(self, func: Callable[..., object], *args: object, **kwargs: object) -> None:
        """Tell the breaker's listeners ``func`` is about to run (pybreaker's ``before_call``)."""

    def succeeded(self, ticket: Ticket) -> None:
        """The call succeeded."""

    def failed(self, ticket: Ticket, exc: BaseException) -> None:
        """The call raised ``exc``."""


B = TypeVar("B", bound=Guarded)


def _guarded_block() -> None:
    """Stands for the block of ``with breaker.calling():`` in ``before_call`` listeners."""


class Guard(Generic[B]):
    """Context manager guarding one block with a breaker (not reentrant)."""

    def __init__(self, breaker: B) -> None:
        self.breaker = breaker
        self._ticket: Ticket | None = None

    def __enter__(self) -> B:
        self._ticket = self.breaker.admit()
        self.breaker.before_call(_guarded_block)
        return self.breaker

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ticket, self._ticket = self._ticket or FREE, None
        if exc is None:
            self.breaker.succeeded(ticket)
        else:
            self.breaker.failed(ticket, exc)


def guarded_call(breaker: Guarded, func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``func`` under ``breaker`` (no lock is held while it runs)."""
    ticket = breaker.admit()
    breaker.before_call(func, *args, **kwargs)
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        breaker.failed(ticket, exc)
        raise
    if isinstance(result, types.GeneratorType):
        return cast(T, settle_generator(breaker, ticket, result))
    breaker.succeeded(ticket)
    return result


def settle_generator(breaker: Guarded, ticket: Ticket, generator: Generator[Y, S, R]) -> Generator[Y, S, R]:
    """``generator``, settled on ``breaker`` when it is exhausted (success) or raises (failure)."""
    try:
        result = yield from generator
    except BaseException as exc:
        breaker.failed(ticket, exc)
        raise
    breaker.succeeded(ticket)
    return result


def tornado_call(breaker: Guarded, func: Callable[..., object], *args: object, **kwargs: object) -> object:
    """pybreaker's Tornado call, on the same path as :func:`guarded_call` (needs tornado)."""
    if not pybreaker.HAS_TORNADO_SUPPORT:
        raise ImportError("No module named tornado")
    from tornado import gen

    @gen.coroutine
    def wrapped() -> Generator[object, object, object]:
        ticket = breaker.admit()
        breaker.before_call(func, *args, **kwargs)
        try:
            result = yield func(*args, **kwargs)
        except BaseException as exc:
            breaker.failed(ticket, exc)
            raise
        if isinstance(result, types.GeneratorType):
            return settle_generator(breaker, ticket, result)
        breaker.succeeded(ticket)
        return result

    return wrapped()
