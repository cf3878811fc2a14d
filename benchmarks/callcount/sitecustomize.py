"""Counts every function call of a worker process, for :mod:`benchmarks.worker_calls`.

Imported at start-up by each Python process whose ``PYTHONPATH`` holds this directory; it does nothing unless
``BENCH_CALLS_DIR`` is set. Then it counts Python calls and calls of built-in functions, in every thread, by
function (``sys.setprofile`` and ``threading.setprofile``), and writes the counts to
``$BENCH_CALLS_DIR/<pid>.json`` when the process ends: at interpreter exit (the worker's main process) or in
``os._exit`` (a billiard pool process ends there). A forked child starts counting from zero.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections import Counter
from types import FrameType

_DIR = os.environ.get("BENCH_CALLS_DIR")
_counts: Counter[str] = Counter()


def _profile(frame: FrameType, event: str, arg: object) -> None:
    if event == "call":
        code = frame.f_code
        _counts[f"{code.co_filename.split('site-packages/')[-1]}:{code.co_name}"] += 1
    elif event == "c_call":
        _counts[f"C:{getattr(arg, '__qualname__', getattr(arg, '__name__', '?'))}"] += 1


def _dump() -> None:
    sys.setprofile(None)
    threading.setprofile(None)
    if _DIR is None:
        return
    path = os.path.join(_DIR, f"{os.getpid()}.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "counts": _counts}, out)


def _forked() -> None:
    _counts.clear()


if _DIR is not None:
    _exit = os._exit

    def _counted_exit(code: int) -> None:
        try:
            _dump()
        finally:
            _exit(code)

    os.register_at_fork(after_in_child=_forked)
    atexit.register(_dump)
    os._exit = _counted_exit  # type: ignore[assignment]  # the same signature, typed NoReturn upstream
    sys.setprofile(_profile)
    threading.setprofile(_profile)
