"""Remote control commands the plugin registers with Celery's worker (``celery control ...``)."""

from __future__ import annotations

from typing import Any

from celery.worker.control import control_command

from .runtime import get_runtime

__all__ = ["supervision_reconcile"]


@control_command(args=[("pause", list)], signature="[queue, ...]")
def supervision_reconcile(state: Any, pause: list[str] | None = None, **_: Any) -> dict[str, Any]:
    """Re-read the pause records now; stop consuming ``pause`` queues at once."""
    consumer = state.consumer
    runtime = get_runtime(consumer.app)
    if runtime is None or runtime.reconciler is None:
        return {"ok": "not supervised"}
    runtime.reconciler.pause_now(consumer, [q for q in (pause or []) if isinstance(q, str)])
    return {"ok": "reconciling"}
