"""One description of a crash: ``str(exc)`` that never raises, however broken the exception is.

A layer-0 module (it imports nothing from the package), shared by the crash capture
(``supervision/crash.py``), the fingerprint (``lessons/fingerprint.py``), the classifier
(``lessons/classify.py``) and the remediation rules (``remediation/rules.py``).
"""

from __future__ import annotations

__all__ = ["exception_text", "unprintable"]


def unprintable(exc: BaseException) -> str:
    """The placeholder of an exception that cannot print itself: ``<unprintable ValueError>``."""
    return f"<unprintable {type(exc).__name__}>"


def exception_text(exc: BaseException, *, limit: int | None = None, use_repr: bool = False,
                   fallback: str | None = None) -> str:
    """``str(exc)``, at most ``limit`` characters (None: all of it); never raises.

    When ``str`` raises (a broken ``__str__`` must not break crash handling): ``repr(exc)`` if
    ``use_repr``; when that raises too or is not asked for, ``fallback``, by default the
    :func:`unprintable` placeholder.
    """
    renders = (str, repr) if use_repr else (str,)
    for render in renders:
        try:
            text = render(exc)
        except Exception:  # a broken __str__ / __repr__
            continue
        return text if limit is None else text[:limit]
    text = unprintable(exc) if fallback is None else fallback
    return text if limit is None else text[:limit]
