"""The worker blueprint's step: validate at boot, select a domain's queues, make the worker's state.

``DomainStep`` runs while the worker is built: bad settings stop the worker there, naming the setting;
``--domain NAME`` narrows the queues consumed to that domain's. It makes the worker's
:class:`~.state.WorkerState` (with the running slots, before a prefork pool forks). Each background service is
a consumer step of its own (:mod:`.services`).
"""

from __future__ import annotations

import difflib
import logging

import click
from celery import Celery, bootsteps
from celery.worker import WorkController

from ..errors import ConfigurationError
from ..log import get_logger, log_event
from ..runtime import Runtime, get_runtime
from ..supervision.cache import PauseFeed
from ..supervision.slots import RunningSlots
from .services import (
    HealthSamplerStep,
    RegistrationStep,
    SheddingStep,
    StatsStep,
    SupervisionStep,
)
from .state import ensure_worker_state
from .ticker import Ticker

__all__ = ["CONSUMER_STEPS", "DOMAIN_OPTION", "DomainStep", "HealthSamplerStep", "RegistrationStep", "SheddingStep",
           "StatsStep", "SupervisionStep", "Ticker"]

#: The background services, one consumer step each, in the order they start.
CONSUMER_STEPS: tuple[type[bootsteps.StartStopStep], ...] = (
    SupervisionStep, RegistrationStep, HealthSamplerStep, SheddingStep, StatsStep,
)

logger = get_logger("worker")

DOMAIN_OPTION = click.Option(
    ["--domain"],
    multiple=True,
    help="prismatic-celery: consume only the queues of this supervision domain (repeatable).",
)


def _selected_queues(runtime: Runtime, domains: tuple[str, ...]) -> list[str]:
    """The queues of ``domains``; an unknown one stops ``celery worker`` with one line and exit code 1."""
    queues: list[str] = []
    for name in domains:
        try:
            queues.extend(runtime.supervisor.domain(name).queues)
        except KeyError as exc:
            raise click.ClickException(str(ConfigurationError("--domain", str(exc.args[0])))) from None
    return queues


class DomainStep(bootsteps.Step):
    """Validates the configuration at boot and applies ``--domain``."""

    name = "prismatic.domain"

    def __init__(self, worker: WorkController, domain: tuple[str, ...] | list[str] | str | None = None,
                 **kwargs: object) -> None:
        try:
            runtime = get_runtime(worker.app)
        except ConfigurationError as exc:  # the worker does not start: one line naming the setting, exit 1
            raise click.ClickException(f"prismatic-celery: invalid configuration: {exc}") from None
        if runtime is None:
            return
        domains = (domain,) if isinstance(domain, str) else tuple(domain or ())
        declared = worker.app.amqp.queues
        for queue in runtime.supervisor.queues:
            if queue in declared:
                continue
            if declared._consume_from is None:  # no -Q: supervised queues are consumed by default
                declared.select_add(queue)
            else:  # -Q chose the queues: declare ours without consuming them
                declared.add(queue)
        if domains:
            worker.app.amqp.queues.select(_selected_queues(runtime, domains))
        state = ensure_worker_state(worker.app)
        state.domains = domains
        _check_task_circuits(worker.app, runtime)
        _warn_unsupervised_routes(worker.app, runtime)
        # per-process shutdown events: recycling a pool process needs them (the attribute is not in the stubs)
        setattr(worker, "pool_restarts", True)
        if state.slots is None:
            # before the pool forks: its processes share it
            state.slots = RunningSlots(domains=[d.name for d in runtime.supervisor.domain_list])
        if state.pause_feed is None:  # likewise: every process of the worker takes its pause view from it
            state.pause_feed = PauseFeed()
            runtime.engine.pauses.follow(state.pause_feed)
        super().__init__(worker, **kwargs)


def _check_task_circuits(app: Celery, runtime: Runtime) -> None:
    """Every circuit a task depends on (``circuits=[...]`` option) must be declared."""
    for name, task in list(app.tasks.items()):
        wanted = getattr(task, "circuits", None)
        if not wanted:
            continue
        if isinstance(wanted, str) or not isinstance(wanted, (list, tuple)):
            raise ConfigurationError(f"{name}.circuits", f"expected a list of circuit names, got {wanted!r}")
        for circuit in wanted:
            if circuit not in runtime.circuits:
                known = ", ".join(runtime.circuits.names) or "none declared"
                raise ConfigurationError(f"{name}.circuits", f"unknown circuit {circuit!r}; prismatic_circuits "
                                                             f"declares: {known}")


def unsupervised_routes(app: Celery, runtime: Runtime) -> list[str]:
    """Tasks routed to a queue no domain declares although they look meant to be supervised: the queue's name
    is close to a supervised queue's (a typo), or a child's ``tasks`` globs name the task. Each as
    ``task -> queue (...)``."""
    supervised = list(runtime.supervisor.queues)
    found: list[str] = []
    for name, task in sorted(app.tasks.items()):
        if name.startswith("celery.") or not getattr(task, "supervise", True):
            continue
        own = getattr(task, "queue", None)
        try:
            routed = app.amqp.router.route({"queue": own} if own else {}, name).get("queue")
        except Exception:  # a route Celery itself cannot resolve is Celery's to report
            continue
        queue = getattr(routed, "name", routed)
        if not isinstance(queue, str) or queue in supervised:
            continue
        meant = runtime.supervisor.route(name)
        close = difflib.get_close_matches(queue, supervised, n=1, cutoff=0.75)
        if meant is not None:
            found.append(f"{name} -> {queue} (its child's tasks globs name {meant})")
        elif close:
            found.append(f"{name} -> {queue} (did you mean {close[0]}?)")
    return found


def _warn_unsupervised_routes(app: Celery, runtime: Runtime) -> None:
    """One warning at worker start naming the supervised-looking routes to queues no domain declares."""
    found = unsupervised_routes(app, runtime)
    if found:
        log_event(logging.WARNING, "unsupervised-routes", logger, routes="; ".join(found)[:1000],
                  detail="these tasks run unsupervised: no domain declares their queue")
