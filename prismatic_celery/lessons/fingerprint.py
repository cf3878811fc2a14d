"""Correlate crashes: the same bug on different data gets the same fingerprint (Sentry-style).

A fingerprint is the SHA-1 of three parts:

1. the exception type, qualified by its module (``ValueError``, ``requests.exceptions.HTTPError``);
2. the message normalized by :func:`~.normalize.normalize_message`;
3. the in-app stack frames (:func:`~.frames.in_app_frames`) as ``module:function``, never line numbers,
   so editing a file above the failing line does not split a group.

The message rules are in ``lessons/normalize.py``, the in-app frame rules in ``lessons/frames.py``.
The hash is an identifier, not a security measure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..describe import exception_text
from .frames import InApp, Traceback, in_app_frames
from .normalize import normalize_message

__all__ = ["Fingerprint", "exception_type_name", "fingerprint", "fingerprint_exception"]


def exception_type_name(exc: BaseException | type[BaseException]) -> str:
    """``ValueError`` for builtins, ``package.module.Class`` otherwise."""
    cls = exc if isinstance(exc, type) else type(exc)
    module = getattr(cls, "__module__", "") or ""
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in ("builtins", "exceptions", "") else f"{module}.{qualname}"


def _digest(exc_type: str, normalized: str, frames: Sequence[tuple[str, str]]) -> str:
    parts = [exc_type, normalized, *(f"{module}:{function}" for module, function in frames)]
    return hashlib.sha1("\n".join(parts).encode("utf-8", "replace"), usedforsecurity=False).hexdigest()


def fingerprint(exc_type_name: str, message: str, frames: Sequence[tuple[str, str]]) -> str:
    """The SHA-1 hex of the type, the message (normalized here, idempotently) and the frames."""
    return _digest(exc_type_name, normalize_message(message), frames)


@dataclass(frozen=True)
class Fingerprint:
    """A crash's correlation key and the parts it was computed from."""

    hash: str
    exc_type: str
    normalized_message: str
    frames: tuple[tuple[str, str], ...]

    @property
    def root_frame(self) -> tuple[str, str] | None:
        """The innermost in-app frame (where the application last had control), if any."""
        return self.frames[-1] if self.frames else None


def fingerprint_exception(
    exc: BaseException,
    *,
    in_app_prefixes: InApp = None,
    tb: Traceback | None = None,
) -> Fingerprint:
    """Fingerprint an exception from its own ``__traceback__`` (or ``tb`` when given).

    ``in_app_prefixes`` is passed to :func:`in_app_frames` as ``in_app``.
    """
    exc_type = exception_type_name(exc)
    normalized = normalize_message(exception_text(exc))
    frames = tuple(in_app_frames(tb if tb is not None else exc.__traceback__, in_app=in_app_prefixes))
    return Fingerprint(_digest(exc_type, normalized, frames), exc_type, normalized, frames)
