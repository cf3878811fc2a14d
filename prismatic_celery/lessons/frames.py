"""The in-app frames of a crash: the application's ``(module, function)`` frames, never line numbers.

They are the third part of a fingerprint (``lessons/fingerprint.py``): editing a file above the
failing line does not split a group, and recursion depth does not either.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

__all__ = ["DEFAULT_EXCLUDED_PREFIXES", "MAX_FRAMES", "InApp", "Traceback", "in_app_frames"]

#: Modules whose frames are never in-app by default (the machinery around a task body).
DEFAULT_EXCLUDED_PREFIXES: tuple[str, ...] = (
    "celery", "kombu", "billiard", "vine", "amqp", "prismatic_celery", "importlib", "runpy", "_pytest", "pluggy",
)

#: How the caller says what is in-app: module prefixes, or a predicate over the module name.
InApp = Callable[[str], bool] | Sequence[str] | None

#: At most this many in-app frames (the innermost) take part in the fingerprint.
MAX_FRAMES = 50

#: A traceback object, or the frames of one (a ``StackSummary`` or a list of ``FrameSummary``).
Traceback = TracebackType | traceback.StackSummary | Sequence[traceback.FrameSummary]


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


def _frames(tb: Traceback | None,
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
    tb: Traceback | None,
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
