"""Which domain and child a delivery belongs to: its queue, then its routing key, then the children's task globs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

from celery import Task

from .tree import Child, Domain, Supervisor

__all__ = ["AnyTask", "Located", "Locator"]

#: Any task, whatever its arguments and result (the return type is covariant).
AnyTask: TypeAlias = "Task[..., object]"
#: A supervised delivery's domain and child.
Located: TypeAlias = tuple[Domain, Child]



class Locator:
    """Locates deliveries in ``supervisor``'s tree; ``declared`` returns the app's declared queues (kombu's
    ``app.amqp.queues``: their routing keys are read once, on first use)."""

    def __init__(self, supervisor: Supervisor, declared: Callable[[], Mapping[str, object]]) -> None:
        self.supervisor = supervisor
        self._declared = declared
        self._table: dict[object, Located] | None = None

    def _located_by_name(self) -> dict[object, Located]:
        """Every supervised queue's name and every routing key a declared supervised queue binds (a queue's name
        wins) to its domain and child (read once)."""
        if self._table is None:
            declared: Mapping[str, object]
            try:
                declared = self._declared()
            except Exception:  # an unusual queue config must not break task execution
                declared = {}
            by_queue = {q: found for q in self.supervisor.queues if (found := self.supervisor.locate(q)) is not None}
            table: dict[object, Located] = {
                getattr(declared.get(q), "routing_key", None) or q: found for q, found in by_queue.items()}
            table.update(by_queue)  # a queue's own name before any routing key
            self._table = table
        return self._table

    def locate(self, delivery_info: Mapping[str, object] | None, task_name: str | None) -> Located | None:
        """The domain and child a delivery belongs to (queue, then routing key, then task globs)."""
        if delivery_info:
            table = self._table if self._table is not None else self._located_by_name()
            try:
                found = table.get(delivery_info.get("queue")) or table.get(delivery_info.get("routing_key"))
            except (AttributeError, TypeError):  # not a mapping, or a name that is no string
                found = None
            if found is not None:
                return found
        if task_name:
            return self.supervisor.locate(self.supervisor.route(task_name))
        return None

    def locate_task(self, task: AnyTask) -> Located | None:
        """The domain and child of ``task``'s running request."""
        return self.locate(getattr(task.request, "delivery_info", None), task.name)
