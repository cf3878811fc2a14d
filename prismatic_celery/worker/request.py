"""The supervised Request: supervision that must happen in the worker's main process.

* A pool process that died running a task (``WorkerLostError``: segfault,
  ``os._exit``, OOM kill) is a failed execution like any other (it counts in
  the child's failure rate); its deaths are counted per message id across
  worker restarts; a message that killed its process
  ``prismatic_quarantine_deliveries`` times goes to the dead-letter queue and
  is acknowledged, so a crash loop cannot hold the queue. Below that, the
  message runs again: Celery requeues it (``acks_late`` with
  ``reject_on_worker_lost``) or the plugin republishes it (otherwise plain
  Celery would drop it), unless its child is ``temporary``: then it fails with
  Celery's own ``WorkerLostError``, as without the plugin.

Every hook is guarded: bookkeeping failures never change what Celery does.
(Celery generates a per-task subclass whose ``on_success`` does not call its
base, so success-time work happens in the task's process instead.)
"""

from __future__ import annotations

import logging

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.app.task import Context
from celery.worker.request import Request
from celery.worker.state import task_ready
from kombu.utils.encoding import safe_repr, safe_str

from ..errors import PrismaticError
from ..lessons.redact import redact
from ..log import get_logger, log_event
from ..remediation.backoff import delay_s
from ..remediation.dlq import dead_letter_entry
from ..runtime import Runtime, get_runtime
from ..supervision.engine import Fate
from ..supervision.lost import worker_lost
from ..supervision.tree import Child, Domain, RestartType

__all__ = ["Quarantined", "SupervisedRequest"]

logger = get_logger("request")


class Quarantined(PrismaticError):
    """The message killed its pool process too many times and was moved to the dead-letter queue."""


class SupervisedRequest(Request):
    """Celery's Request plus pool-process bookkeeping and crash-loop quarantine."""

    def on_failure(self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False) -> None:
        try:
            if self._supervise_worker_lost(exc_info):
                return None
        except Exception as exc:  # fall back to Celery's own handling
            log_event(logging.ERROR, "request-hook-failed", logger, hook="on_failure", error=repr(exc)[:300])
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    # -----------------------------------------------------------------------------------------
    def _located(self) -> tuple[Runtime, Domain, Child] | None:
        runtime = get_runtime(self.task.app)
        if runtime is None:
            return None
        delivery = self.delivery_info if isinstance(self.delivery_info, dict) else None
        located = runtime.locator.locate(delivery, self.task.name)
        return None if located is None else (runtime, located[0], located[1])

    def _request(self) -> Context:
        """The task's Context for this request (Celery keeps it private)."""
        context: Context = getattr(self, "_context")  # noqa: B009  (private attribute the stubs do not declare)
        return context

    def _supervise_worker_lost(self, exc_info: ExceptionInfo) -> bool:
        exc = exc_info.exception
        inner = getattr(exc, "exc", None)  # billiard's ExceptionWithTraceback wraps the real one
        if isinstance(inner, BaseException):
            exc = inner
        stored_success = getattr(self, "_success_was_stored", None)
        if not isinstance(exc, WorkerLostError) or (callable(stored_success) and stored_success()):
            return False
        found = self._located()
        if found is None:
            return False
        runtime, domain, child = found
        celery_requeues = bool(self.task.acks_late and self.task.reject_on_worker_lost)
        traceback = safe_str(exc_info.traceback or "")

        def decide(deaths: int) -> Fate:
            if deaths >= runtime.settings.quarantine_deliveries:
                return Fate("dead_letter", f"quarantined: killed its pool process {deaths} times")
            if child.restart is RestartType.TEMPORARY and not celery_requeues:
                return Fate("end", "temporary")  # never run again: Celery records its WorkerLostError
            if celery_requeues:
                return Fate("rerun", "redelivered", 0.0, remediation="redeliver")
            return Fate("rerun", "worker_lost", delay_s(runtime.engine.backoff, deaths), remediation="restart_child")

        _, fate = worker_lost(
            runtime.engine, domain, child, self.id, self.task_name, self.hostname, decide,
            letter=lambda deaths, reason: self._letter(domain, child, exc, traceback, deaths, reason))
        if fate.outcome == "dead_letter":
            self._quarantine(runtime, fate.reason, traceback)
            return True
        if fate.outcome == "end" or celery_requeues:
            return False  # Celery fails it (temporary) or requeues it (reject_on_worker_lost): that is the re-run
        return self._rerun(exc, exc_info, fate.countdown_s)

    def died_unaccepted(self, exitcode: int | None) -> bool:
        """The pool process running this request died before the worker read its acceptance.

        Billiard then sends the job to another process without a ``WorkerLostError``
        (see :mod:`prismatic_celery.supervision.slots`): the death is counted here. True
        when it was the last one allowed and the message was quarantined (billiard
        must not send it again).
        """
        found = self._located()
        if found is None:
            return False
        runtime, domain, child = found
        exc = WorkerLostError(f"Worker exited prematurely: exitcode {exitcode} (before the worker read that it "
                              f"had accepted the task)")

        def decide(deaths: int) -> Fate:
            if deaths >= runtime.settings.quarantine_deliveries:
                return Fate("dead_letter", f"quarantined: killed its pool process {deaths} times")
            return Fate("rerun", "resent_by_pool", 0.0, remediation="redeliver")  # billiard sends it again

        deaths, fate = worker_lost(
            runtime.engine, domain, child, self.id, self.task_name, self.hostname, decide,
            letter=lambda deaths, reason: self._letter(domain, child, exc, "", deaths, reason))
        log_event(logging.WARNING, "worker-lost-unaccepted", logger, task=self.task_name, id=self.id,
                  exitcode=exitcode, deaths=deaths)
        if fate.outcome != "dead_letter":
            return False
        self._quarantine(runtime, fate.reason, "")
        return True

    def _letter(self, domain: Domain, child: Child, exc: BaseException, traceback: str, deaths: int,
                reason: str) -> dict[str, object]:
        """The dead letter of this message, killed by its pool process ``deaths`` times."""
        return dead_letter_entry(
            task=self.task_name, task_id=self.id, args=self.args, kwargs=self.kwargs, queue=child.queue,
            domain=domain.name, reason=reason, exception="WorkerLostError", message=redact(safe_str(exc)),
            traceback=redact(traceback), attempts=deaths,
        )

    def _quarantine(self, runtime: Runtime, reason: str, traceback: str) -> None:
        """The message is in the dead-letter queue: fail it with :class:`Quarantined` and acknowledge it."""
        runtime.store.delete(runtime.keys.key("deaths", self.id))
        task_ready(self)
        failure = Quarantined(reason)
        if self.store_errors:
            self.task.backend.mark_as_failure(self.id, failure, request=self._request())
        if self.task.acks_late:
            self.acknowledge()
        self.send_event("task-failed", exception=safe_repr(failure), traceback=traceback)

    def _rerun(self, exc: BaseException, exc_info: ExceptionInfo, countdown: float) -> bool:
        """Republish a message whose process died (plain Celery would record a failure and drop it).

        ``request.retries`` is left as it is: it is Celery's count; the deaths are the plugin's.
        """
        request = self._request()
        try:
            self.task.signature_from_request(request, countdown=countdown,
                                             retries=int(request.retries or 0)).apply_async()
        except Exception as send_exc:  # let Celery record the failure rather than lose track of it
            log_event(logging.ERROR, "rerun-failed", logger, task=self.task_name, id=self.id,
                      error=repr(send_exc)[:300])
            return False
        task_ready(self)
        if self.store_errors:
            self.task.backend.mark_as_retry(self.id, WorkerLostError(safe_str(exc)), exc_info.traceback,
                                            request=request)
        if self.task.acks_late:
            self.acknowledge()
        self.send_event("task-retried", exception=safe_repr(exc), traceback=safe_str(exc_info.traceback))
        return True
