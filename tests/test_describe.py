"""The one description of a crash: ``str(exc)`` that never raises (prismatic_celery/describe.py)."""

from __future__ import annotations

from prismatic_celery.describe import exception_text, unprintable


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class _Unrepresentable(_Unprintable):
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_the_text_is_str_of_the_exception_cut_to_the_limit() -> None:
    assert exception_text(ValueError("order 42 failed")) == "order 42 failed"
    assert exception_text(ValueError("x" * 50), limit=10) == "x" * 10
    assert exception_text(ValueError("short"), limit=100) == "short"


def test_a_broken_str_gives_the_fallback_or_the_placeholder() -> None:
    assert exception_text(_Unprintable()) == unprintable(_Unprintable()) == "<unprintable _Unprintable>"
    assert exception_text(_Unprintable(), fallback="") == ""
    assert exception_text(_Unprintable(), limit=5) == "<unpr"


def test_repr_is_tried_before_the_fallback_when_asked() -> None:
    assert exception_text(_Unprintable("a", 1), use_repr=True) == "_Unprintable('a', 1)"
    assert exception_text(_Unrepresentable(), use_repr=True) == "<unprintable _Unrepresentable>"
    assert exception_text(_Unrepresentable(), use_repr=True, fallback="?") == "?"
