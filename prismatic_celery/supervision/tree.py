"""The supervision tree: a Supervisor of Domains (bulkheads) of Children (queues).

Pure data and validation; the engine that acts on it is ``supervision/engine.py``
(ARCHITECTURE.md has the map).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import ConfigurationError
from ..validate import (
    as_choice,
    as_class,
    as_int,
    as_mapping,
    as_seconds,
    as_str,
    as_str_list,
    reject_unknown,
)

__all__ = [
    "DEFAULT_DOMAIN_BUDGET",
    "DEFAULT_SUPERVISOR_BUDGET",
    "Child",
    "Domain",
    "RestartBudget",
    "RestartType",
    "Strategy",
    "Supervisor",
]


class Strategy(str, Enum):
    """What else restarts when a child crashes (OTP restart strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the crashed child restarts."""
    REST_FOR_ONE = "rest_for_one"
    """Children declared after the crashed one are paused until it recovers."""
    ONE_FOR_ALL = "one_for_all"
    """Every child of the domain is paused, the domain's pool processes recycled, then resumed."""


class RestartType(str, Enum):
    """Whether a failed message of the child may run again (OTP restart types).

    The type says *whether* a message may run again; the remediation says *how*
    (backoff, circuit wait, fresh process) or that it should not (dead letter).
    """

    PERMANENT = "permanent"
    """May run again after any failure, pool-process deaths included; the remediation decides how, or
    moves it to the dead-letter queue."""
    TRANSIENT = "transient"
    """As permanent, except after one of the child's ``normal_exceptions``: a normal exit, which fails
    as in plain Celery and is not a failure of the child."""
    TEMPORARY = "temporary"
    """Never runs again under the plugin, after any failure (pool-process deaths included): it fails as
    in plain Celery, not dead-lettered; the failure is recorded and counts in the child's failure rate."""


@dataclass(frozen=True)
class RestartBudget:
    """OTP restart intensity: at most ``max_restarts`` restarts (child failures) within ``period_s`` seconds."""

    max_restarts: int
    period_s: float

    def __post_init__(self) -> None:
        _check_budget("RestartBudget", self.max_restarts, self.period_s)

    @classmethod
    def from_config(cls, setting: str, value: object) -> RestartBudget:
        """Build from ``{"max_restarts": int, "period_s": seconds}``."""
        if isinstance(value, RestartBudget):
            return value
        data = as_mapping(setting, value)
        reject_unknown(setting, data, ("max_restarts", "period_s"))
        for required in ("max_restarts", "period_s"):
            if required not in data:
                raise ConfigurationError(f"{setting}.{required}", "is required")
        max_restarts, period_s = _check_budget(setting, data["max_restarts"], data["period_s"])
        return cls(max_restarts, period_s)


def _check_budget(setting: str, max_restarts: object, period_s: object) -> tuple[int, float]:
    return (
        as_int(f"{setting}.max_restarts", max_restarts, minimum=0),
        as_seconds(f"{setting}.period_s", period_s),
    )


# A restart here is a child failure: at least prismatic_child_failure_rate of at least
# prismatic_child_min_executions executions failed (a failed message alone is never one), and the
# child's window starts afresh after it, so each restart is new evidence. 10 in 60 s (200 failed
# executions or more) lets a quiet queue take a burst of bad messages without pausing its whole
# domain, and still cools a domain down within seconds when a busy child keeps failing.
DEFAULT_DOMAIN_BUDGET = RestartBudget(max_restarts=10, period_s=60.0)
DEFAULT_SUPERVISOR_BUDGET = RestartBudget(max_restarts=3, period_s=300.0)


def _strategy(setting: str, value: object) -> Strategy:
    if isinstance(value, Strategy):
        return value
    return Strategy(as_choice(setting, value, [s.value for s in Strategy]))


def _restart_type(setting: str, value: object) -> RestartType:
    if isinstance(value, RestartType):
        return value
    return RestartType(as_choice(setting, value, [r.value for r in RestartType]))


def _exceptions(setting: str, value: object) -> tuple[type[BaseException], ...]:
    if isinstance(value, (str, type)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(setting, f"expected a list of exception classes, got {value!r}")
    return tuple(as_class(f"{setting}[{i}]", item, BaseException) for i, item in enumerate(value))


@dataclass(frozen=True)
class Child:
    """One queue of a domain and the tasks routed to it.

    ``tasks`` are task-name globs routed to ``queue`` by the plugin's router;
    tasks routed there by your own ``task_routes`` are supervised too.
    ``normal_exceptions`` only matter for ``transient`` children: a crash
    with one of them is a normal exit and is not re-run.
    """

    queue: str
    restart: RestartType = RestartType.PERMANENT
    tasks: tuple[str, ...] = ()
    normal_exceptions: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        where = f"Child({self.queue!r})"
        as_str(f"{where}.queue", self.queue)
        object.__setattr__(self, "restart", _restart_type(f"{where}.restart", self.restart))
        object.__setattr__(self, "tasks", as_str_list(f"{where}.tasks", self.tasks))
        object.__setattr__(
            self, "normal_exceptions", _exceptions(f"{where}.normal_exceptions", self.normal_exceptions)
        )

    @property
    def name(self) -> str:
        """A child is named after its queue."""
        return self.queue

    def routes(self, task_name: str) -> bool:
        """True when ``task_name`` matches one of this child's task globs."""
        return any(fnmatch.fnmatchcase(task_name, pattern) for pattern in self.tasks)

    @classmethod
    def from_config(cls, setting: str, value: object) -> Child:
        """Build from a queue name or ``{"queue", "restart", "tasks", "normal_exceptions"}``."""
        if isinstance(value, Child):
            return value
        if isinstance(value, str):
            return cls(queue=as_str(setting, value))
        data = as_mapping(setting, value)
        reject_unknown(setting, data, ("queue", "restart", "tasks", "normal_exceptions"))
        if "queue" not in data:
            raise ConfigurationError(f"{setting}.queue", "is required")
        return cls(
            queue=as_str(f"{setting}.queue", data["queue"]),
            restart=_restart_type(f"{setting}.restart", data.get("restart", RestartType.PERMANENT)),
            tasks=as_str_list(f"{setting}.tasks", data.get("tasks", ())),
            normal_exceptions=_exceptions(f"{setting}.normal_exceptions", data.get("normal_exceptions", ())),
        )


_DOMAIN_KEYS = ("strategy", "children", "budget", "concurrency", "cluster_concurrency")


@dataclass(frozen=True)
class Domain:
    """A bounded context and a bulkhead: its own children, strategy, budget and slot cap.

    ``budget`` None means the supervisor's default domain budget;
    ``concurrency`` None means no cap (a domain may use every pool slot);
    ``cluster_concurrency`` caps the domain's running tasks across every worker.
    """

    name: str
    children: Sequence[Child | str] = ()
    strategy: Strategy = Strategy.ONE_FOR_ONE
    budget: RestartBudget | None = None
    concurrency: int | None = None
    cluster_concurrency: int | None = None

    def __post_init__(self) -> None:
        where = f"Domain({self.name!r})"
        as_str(f"{where}.name", self.name)
        if ":" in self.name:
            raise ConfigurationError(f"{where}.name", "must not contain ':'")
        children = tuple(Child.from_config(f"{where}.children[{i}]", c) for i, c in enumerate(self.children))
        if not children:
            raise ConfigurationError(f"{where}.children", "a domain needs at least one child queue")
        _reject_duplicate_queues(f"{where}.children", [(self.name, c) for c in children])
        object.__setattr__(self, "children", children)
        object.__setattr__(self, "strategy", _strategy(f"{where}.strategy", self.strategy))
        if self.concurrency is not None:
            as_int(f"{where}.concurrency", self.concurrency, minimum=1)
        if self.cluster_concurrency is not None:
            as_int(f"{where}.cluster_concurrency", self.cluster_concurrency, minimum=1)

    @property
    def child_list(self) -> tuple[Child, ...]:
        """The children, typed (``children`` is normalised to Child instances)."""
        return tuple(c for c in self.children if isinstance(c, Child))

    @property
    def queues(self) -> tuple[str, ...]:
        """Queue names in declaration order."""
        return tuple(c.queue for c in self.child_list)

    def children_after(self, queue: str) -> tuple[Child, ...]:
        """The children declared after ``queue`` (what ``rest_for_one`` pauses)."""
        queues = self.queues
        return self.child_list[queues.index(queue) + 1 :]

    @classmethod
    def from_config(cls, setting: str, name: str, value: object) -> Domain:
        """Build from ``{"strategy", "children", "budget", "concurrency"}``."""
        data = as_mapping(setting, value)
        reject_unknown(setting, data, _DOMAIN_KEYS)
        if not name.strip():
            raise ConfigurationError(setting, "a domain name must not be empty")
        if ":" in name:
            raise ConfigurationError(setting, "a domain name must not contain ':'")
        if "children" not in data:
            raise ConfigurationError(f"{setting}.children", "is required (a list of queue names or mappings)")
        raw_children = data["children"]
        if isinstance(raw_children, str) or not isinstance(raw_children, (list, tuple)):
            raise ConfigurationError(f"{setting}.children", f"expected a list, got {raw_children!r}")
        children = [Child.from_config(f"{setting}.children[{i}]", c) for i, c in enumerate(raw_children)]
        if not children:
            raise ConfigurationError(f"{setting}.children", "a domain needs at least one child queue")
        _reject_duplicate_queues(f"{setting}.children", [(name, c) for c in children])
        budget = data.get("budget")
        concurrency = data.get("concurrency")
        cluster = data.get("cluster_concurrency")
        return cls(
            name=name,
            children=children,
            strategy=_strategy(f"{setting}.strategy", data.get("strategy", Strategy.ONE_FOR_ONE)),
            budget=None if budget is None else RestartBudget.from_config(f"{setting}.budget", budget),
            concurrency=None if concurrency is None else as_int(f"{setting}.concurrency", concurrency, minimum=1),
            cluster_concurrency=None if cluster is None else as_int(f"{setting}.cluster_concurrency", cluster,
                                                                    minimum=1),
        )


def _reject_duplicate_queues(setting: str, owned: Iterable[tuple[str, Child]]) -> None:
    seen: dict[str, str] = {}
    for domain, child in owned:
        if child.queue in seen:
            raise ConfigurationError(
                setting,
                f"queue {child.queue!r} is declared twice (domains {seen[child.queue]!r} and {domain!r}); "
                "a queue belongs to exactly one child",
            )
        seen[child.queue] = domain


@dataclass(frozen=True)
class Supervisor:
    """The top-level supervisor (``one_for_one`` over its domains).

    ``budget`` is its own restart budget (domain restarts); exceeding it
    escalates to operators. ``domain_budget`` is the default for domains
    that declare none.
    """

    domains: Sequence[Domain] = ()
    budget: RestartBudget = DEFAULT_SUPERVISOR_BUDGET
    domain_budget: RestartBudget = DEFAULT_DOMAIN_BUDGET
    _index: Mapping[str, tuple[Domain, Child]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        domains = tuple(self.domains)
        names = [d.name for d in domains]
        for name in names:
            if names.count(name) > 1:
                raise ConfigurationError(f"Supervisor.domains[{name!r}]", "domain declared twice")
        _reject_duplicate_queues("Supervisor.domains", [(d.name, c) for d in domains for c in d.child_list])
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "_index", {c.queue: (d, c) for d in domains for c in d.child_list})

    @property
    def domain_list(self) -> tuple[Domain, ...]:
        """The domains, typed, in declaration order."""
        return tuple(self.domains)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every supervised queue, in declaration order."""
        return tuple(self._index)

    def locate(self, queue: str | None) -> tuple[Domain, Child] | None:
        """The domain and child that own ``queue``; None for an unsupervised queue."""
        if queue is None:
            return None
        return self._index.get(queue)

    def domain(self, name: str) -> Domain:
        """The domain called ``name`` (KeyError naming the known domains otherwise)."""
        for domain in self.domain_list:
            if domain.name == name:
                return domain
        raise KeyError(f"no domain {name!r}; known: {', '.join(d.name for d in self.domain_list) or 'none'}")

    def budget_for(self, domain: Domain) -> RestartBudget:
        """The domain's own budget, else the supervisor's default domain budget."""
        return domain.budget or self.domain_budget

    def route(self, task_name: str) -> str | None:
        """The queue a task is routed to by a child's ``tasks`` globs, if any."""
        for domain in self.domain_list:
            for child in domain.child_list:
                if child.routes(task_name):
                    return child.queue
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the tree (for the CLI, the demo and the dashboard)."""
        return {
            "strategy": Strategy.ONE_FOR_ONE.value,
            "budget": {"max_restarts": self.budget.max_restarts, "period_s": self.budget.period_s},
            "domains": [
                {
                    "name": d.name,
                    "strategy": d.strategy.value,
                    "budget": {
                        "max_restarts": self.budget_for(d).max_restarts,
                        "period_s": self.budget_for(d).period_s,
                    },
                    "concurrency": d.concurrency,
                    "cluster_concurrency": d.cluster_concurrency,
                    "children": [
                        {"queue": c.queue, "restart": c.restart.value, "tasks": list(c.tasks)}
                        for c in d.child_list
                    ],
                }
                for d in self.domain_list
            ],
        }

    @classmethod
    def from_config(
        cls,
        setting: str,
        value: object,
        *,
        budget: RestartBudget = DEFAULT_SUPERVISOR_BUDGET,
        domain_budget: RestartBudget = DEFAULT_DOMAIN_BUDGET,
    ) -> Supervisor:
        """Build from the ``prismatic_domains`` mapping ``{name: domain mapping}``."""
        data = as_mapping(setting, value)
        domains = [Domain.from_config(f"{setting}.{name}", name, spec) for name, spec in data.items()]
        owned = [(d.name, c) for d in domains for c in d.child_list]
        _reject_duplicate_queues(setting, owned)
        return cls(domains=domains, budget=budget, domain_budget=domain_budget)
