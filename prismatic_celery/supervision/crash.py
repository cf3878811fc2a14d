"""A crash as the engine sees it: captured once, redacted, fingerprinted and classified."""

from __future__ import annotations

import os
import time
import traceback as tb_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..describe import exception_text
from ..lessons.classify import Overrides, classify
from ..lessons.fingerprint import Fingerprint, exception_type_name, fingerprint_exception
from ..lessons.frames import InApp
from ..lessons.redact import redact
from .recycle import process_started_at
from .tree import Child, Domain

if TYPE_CHECKING:
    from ..remediation.rules import Decision
    from .locate import AnyTask

__all__ = ["HEADER", "Crash", "fair_trial", "reruns"]

# Message header carrying a crashed task's remediation history to its re-runs; it comes back
# as ``task.request.prismatic`` so the outcome (later success or final failure) can be recorded.
# Its ``attempt`` is the plugin's own re-run counter: ``request.retries`` and ``max_retries``
# stay Celery's (a task's own ``retry()`` and ``autoretry_for`` behave exactly as without the plugin).
HEADER = "prismatic"
TRACEBACK_LIMIT = 8000


def reruns(request: object) -> int:
    """How many times the plugin has re-run this message so far (0 on its first execution).

    A task that behaves differently on a re-run reads this, not ``request.retries``
    (which counts only Celery's own retries: ``self.retry()``, ``autoretry_for``).
    """
    history = getattr(request, HEADER, None)
    attempt = history.get("attempt") if isinstance(history, dict) else None
    return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 0 else 0


@dataclass(frozen=True)
class Crash:
    """Everything recorded about one failed execution of a supervised task."""

    task_name: str
    task_id: str
    attempt: int
    """Re-runs the plugin gave this message so far (0 on its first failure)."""
    domain: Domain
    child: Child
    exc: BaseException
    exc_type: str
    message: str
    traceback: str
    fp: Fingerprint
    failure_class: str
    first_crash: float
    remediations: tuple[str, ...] = ()
    """Labels of the remediations this message got so far, oldest first."""
    circuits: tuple[str, ...] = ()
    """The circuits the task declares (``circuits=[...]``)."""
    previous: tuple[str, str] | None = None
    """(fingerprint, remediation label) of the attempt this crash ends, when the message was re-run."""
    at: float = field(default_factory=time.time, compare=False)

    @property
    def fingerprint(self) -> str:
        """The crash's fingerprint hash."""
        return self.fp.hash

    @classmethod
    def capture(cls, task: AnyTask, exc: BaseException, domain: Domain, child: Child, *,
                in_app_modules: InApp = None, failure_class_overrides: Overrides | None = None) -> Crash:
        """Capture a crash of the running request (secrets redacted before anything leaves here)."""
        request = task.request
        history = getattr(request, HEADER, None)
        history = history if isinstance(history, dict) else {}
        first = history.get("first_crash")
        remediations = history.get("remediations")
        previous_fp, previous_label = history.get("fp"), history.get("label") or history.get("action")
        labels = tuple(str(r) for r in remediations)[-20:] if isinstance(remediations, list) else ()
        if not fair_trial(history):  # another stale process ran the re-run: recycle again, count nothing
            previous_fp, labels = None, labels[:-1]
        circuits = getattr(task, "circuits", None) or ()
        try:
            text = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:  # formatting calls the exception's own methods; they may raise
            text = f"{type(exc).__name__}: {exception_text(exc, use_repr=True)}"
        return cls(
            task_name=str(task.name),
            task_id=str(request.id),
            attempt=reruns(request),
            domain=domain,
            child=child,
            exc=exc,
            exc_type=exception_type_name(exc),
            message=redact(exception_text(exc, use_repr=True)),
            traceback=redact(text, limit=TRACEBACK_LIMIT),
            fp=fingerprint_exception(exc, in_app_prefixes=in_app_modules),
            failure_class=classify(exc, overrides=failure_class_overrides),
            first_crash=float(first) if isinstance(first, (int, float)) else time.time(),
            remediations=labels,
            circuits=tuple(str(c) for c in circuits) if isinstance(circuits, (list, tuple)) else (),
            previous=(previous_fp, previous_label) if isinstance(previous_fp, str) and isinstance(previous_label, str)
            and previous_label else None,
        )

    def tracking(self, decision: Decision, *, known: bool) -> dict[str, object]:
        """The header a re-run carries: its attempt, this crash's fingerprint and time, the remediation applied
        (name and label), whether the pattern was known, the first crash's time and the history."""
        return {
            "attempt": self.attempt + 1,
            "fp": self.fingerprint,
            "action": decision.action.name,
            "label": decision.action.label,
            "rule": decision.rule_name or "",
            "known": known,
            "applied_at": round(self.at, 3),
            "pid": os.getpid(),
            "first_crash": self.first_crash,
            "remediations": [*self.remediations, decision.action.label][-20:],
        }


def fair_trial(history: Mapping[str, object]) -> bool:
    """Whether a failed re-run tested the remediation its crash got.

    ``recycle_process`` replaces the process that crashed; when its re-run ran in another process
    that was already running before the crash (a sibling with the same stale state), the recycle
    was not tried: that failure is not the recycle's, and this process gets one too.
    """
    applied, pid = history.get("applied_at"), history.get("pid")
    if history.get("action") != "recycle_process" or not isinstance(applied, (int, float)) or not isinstance(pid, int):
        return True
    return pid == os.getpid() or process_started_at() > applied
