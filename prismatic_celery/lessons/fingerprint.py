"""Correlate crashes: the same bug on different data gets the same fingerprint (Sentry-style).

A fingerprint is the SHA-1 of three parts:

1. the exception type, qualified by its module (``ValueError``, ``requests.exceptions.HTTPError``);
2. the message normalized by :func:`normalize_message`: secrets redacted, then data (numbers,
   UUIDs, hex, addresses, IPs, e-mails, URLs, quoted values, timestamps, paths) replaced by
   placeholders such as ``<n>`` and ``'<str>'``;
3. the in-app stack frames (:func:`in_app_frames`) as ``module:function``, never line numbers,
   so editing a file above the failing line does not split a group.

The hash is an identifier, not a security measure.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from .redact import redact

__all__ = [
    "DEFAULT_EXCLUDED_PREFIXES",
    "Fingerprint",
    "InApp",
    "exception_type_name",
    "fingerprint",
    "fingerprint_exception",
    "in_app_frames",
    "normalize_message",
]

#: Modules whose frames are never in-app by default (the machinery around a task body).
DEFAULT_EXCLUDED_PREFIXES: tuple[str, ...] = (
    "celery", "kombu", "billiard", "vine", "amqp", "prismatic_celery", "importlib", "runpy", "_pytest", "pluggy",
)

#: How the caller says what is in-app: module prefixes, or a predicate over the module name.
InApp = Callable[[str], bool] | Sequence[str] | None

#: Longest normalized message that takes part in the fingerprint.
MESSAGE_LIMIT = 1000
#: At most this many in-app frames (the innermost) take part in the fingerprint.
MAX_FRAMES = 50

_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(r"\b[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+\b"), "<email>"),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
        "<timestamp>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\bat 0x[0-9a-fA-F]+\b"), "at <addr>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (
        re.compile(
            r"(?<![\w:])(?:(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}"
            r"|(?:[0-9a-fA-F]{1,4}:){0,6}[0-9a-fA-F]{0,4}::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)(?![\w:])"
        ),
        "<ip>",
    ),
    (re.compile(r"(?<!\w)'[^'\n]{0,300}'(?!\w)"), "'<str>'"),
    (re.compile(r'(?<!\w)"[^"\n]{0,300}"(?!\w)'), '"<str>"'),
    (re.compile(r"(?<![\w/.])(?:[A-Za-z]:)?(?:[/\\][\w.\-~]+){2,}[/\\]?"), "<path>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)
_PATH_HAS_DIGIT = re.compile(r"\d")


def normalize_message(message: str | bytes) -> str:
    """The message with secrets redacted and variable data replaced by placeholders.

    Applying it twice changes nothing more. Paths are replaced only when they contain a digit
    (``/data/run-17/out.csv``); ``/etc/app.conf`` is kept because it names a place, not data.
    """
    text = redact(message, limit=MESSAGE_LIMIT)
    for pattern, placeholder in _SUBSTITUTIONS:
        if placeholder == "<path>":
            text = pattern.sub(lambda m: "<path>" if _PATH_HAS_DIGIT.search(m.group(0)) else m.group(0), text)
        else:
            text = pattern.sub(placeholder, text)
    return text.strip()


@functools.lru_cache(maxsize=2)
def _roots(names: tuple[str, ...]) -> tuple[str, ...]:
    roots: set[str] = set()
    for name in names:
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(os.path.normcase(os.path.realpath(path)))
    return tuple(sorted(roots))


def _under(filename: str, roots: tuple[str, ...]) -> bool:
    real = os.path.normcase(os.path.realpath(filename))
    return any(real == root or real.startswith(root + os.sep) for root in roots)


@functools.lru_cache(maxsize=4096)
def _is_stdlib_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return True  # <frozen importlib._bootstrap>, <string>, <stdin>: not the app's code
    # (a venv's platstdlib contains its site-packages: those are packages, not the stdlib)
    return not _in_site_packages(filename) and _under(filename, _roots(("stdlib", "platstdlib")))


def _in_site_packages(filename: str) -> bool:
    parts = re.split(r"[/\\]", filename)
    return "site-packages" in parts or "dist-packages" in parts


@functools.lru_cache(maxsize=4096)
def _is_library_file(filename: str) -> bool:
    if _is_stdlib_file(filename) or _in_site_packages(filename):
        return True
    return _under(filename, _roots(("purelib", "platlib")))


@functools.lru_cache(maxsize=4096)
def _module_from_filename(filename: str) -> str:
    """Best guess at a module name for a frame that only knows its file (a FrameSummary)."""
    real = os.path.realpath(filename)
    best = ""
    for entry in sys.path:
        base = os.path.realpath(entry or os.getcwd())
        if real.startswith(base + os.sep) and len(base) > len(best):
            best = base
    relative = real[len(best) + 1:] if best else os.path.basename(real)
    stem, _ = os.path.splitext(relative)
    parts = [p for p in re.split(r"[/\\]", stem) if p]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or stem


def _matches_prefix(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _frames(tb: TracebackType | traceback.StackSummary | Sequence[traceback.FrameSummary] | None,
            ) -> list[tuple[str, str, str]]:
    """``(module, function, filename)`` for each frame, outermost first."""
    if tb is None:
        return []
    if isinstance(tb, TracebackType):
        out = []
        for frame, _lineno in traceback.walk_tb(tb):
            code = frame.f_code
            module = frame.f_globals.get("__name__")
            if not isinstance(module, str):
                module = _module_from_filename(code.co_filename)
            out.append((module, getattr(code, "co_qualname", code.co_name), code.co_filename))
        return out
    return [(_module_from_filename(f.filename), f.name, f.filename) for f in tb]


def in_app_frames(
    tb: TracebackType | traceback.StackSummary | Sequence[traceback.FrameSummary] | None,
    *,
    in_app: InApp = None,
) -> list[tuple[str, str]]:
    """The application's frames as ``(module, function)``, outermost first, without line numbers.

    ``in_app`` is a sequence of module prefixes (``["myproj", "billing"]``) or a predicate on
    the module name. By default a frame is in-app unless its file is in the standard library,
    ``site-packages``/``dist-packages`` or a ``<frozen>`` module, or its module is one of
    :data:`DEFAULT_EXCLUDED_PREFIXES` (Celery, Kombu, billiard, prismatic_celery...).
    When no frame is in-app by that default, frames from ``site-packages`` count too (an
    application installed as a package), still without the stdlib and the excluded modules.
    Consecutive repeats (recursion) collapse into one, and at most the innermost
    :data:`MAX_FRAMES` are kept, so recursion depth does not split a group.
    """
    if in_app is None:
        def keep(module: str, filename: str) -> bool:
            return not _matches_prefix(module, DEFAULT_EXCLUDED_PREFIXES) and not _is_library_file(filename)
    elif callable(in_app):
        predicate = in_app

        def keep(module: str, filename: str) -> bool:
            return bool(predicate(module))
    else:
        prefixes = (in_app,) if isinstance(in_app, str) else tuple(in_app)

        def keep(module: str, filename: str) -> bool:
            return _matches_prefix(module, prefixes)

    frames = _frames(tb)
    result = _select(frames, keep)
    if not result and in_app is None:
        # Nothing in-app by the default rule: the application itself may be installed into
        # site-packages. Fall back to every frame outside the stdlib and the excluded machinery.
        result = _select(frames, lambda module, filename: not _matches_prefix(module, DEFAULT_EXCLUDED_PREFIXES)
                         and not _is_stdlib_file(filename))
    return result


def _select(frames: Sequence[tuple[str, str, str]], keep: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    result: list[tuple[str, str]] = []
    for module, function, filename in frames:
        if keep(module, filename) and (not result or result[-1] != (module, function)):
            result.append((module, function))
    return result[-MAX_FRAMES:]


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


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break crash handling
        return f"<unprintable {type(exc).__name__}>"


def fingerprint_exception(
    exc: BaseException,
    *,
    in_app_prefixes: InApp = None,
    tb: TracebackType | traceback.StackSummary | Sequence[traceback.FrameSummary] | None = None,
) -> Fingerprint:
    """Fingerprint an exception from its own ``__traceback__`` (or ``tb`` when given).

    ``in_app_prefixes`` is passed to :func:`in_app_frames` as ``in_app``.
    """
    exc_type = exception_type_name(exc)
    normalized = normalize_message(_message(exc))
    frames = tuple(in_app_frames(tb if tb is not None else exc.__traceback__, in_app=in_app_prefixes))
    return Fingerprint(_digest(exc_type, normalized, frames), exc_type, normalized, frames)
