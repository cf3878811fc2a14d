"""Putting a message back on its queue for later, without losing it.

Celery's ``Task.retry`` always spends one retry. A restart must (it counts),
a deferral must not (an open circuit or a paused queue is not the task's
fault), so both go through :func:`requeue`, which republishes the message
with the same id and the retry count the caller chooses, then raises
``Retry`` so the current delivery is acknowledged and recorded as RETRY.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn

from celery.exceptions import Retry

if TYPE_CHECKING:
    from .locate import AnyTask

__all__ = ["can_requeue", "requeue"]


def can_requeue(task: AnyTask) -> bool:
    """False for direct calls and eager execution (there is no message to put back)."""
    request = task.request
    return not (request.called_directly or request.is_eager)


def requeue(
    task: AnyTask, *, countdown_s: float, retries: int, exc: BaseException | None = None,
    headers: Mapping[str, object] | None = None,
) -> NoReturn:
    """Republish the current message to run after ``countdown_s`` with ``retries``; raises Retry.

    ``headers`` are merged into the message's headers (they come back as
    attributes of ``task.request`` when it runs again).
    """
    request = task.request
    args, kwargs, countdown = tuple(request.args or ()), dict(request.kwargs or {}), max(0.0, countdown_s)
    if headers:
        signature = task.signature_from_request(request, args, kwargs, countdown=countdown, retries=retries,
                                                headers={**(request.headers or {}), **headers})
    else:
        signature = task.signature_from_request(request, args, kwargs, countdown=countdown, retries=retries)
    signature.apply_async()
    raise Retry(exc=exc if isinstance(exc, Exception) else None, when=int(countdown_s * 1000) / 1000)  # type: ignore[arg-type]  # stubs want numbers.Real
