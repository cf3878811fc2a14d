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

_LOCATED = "_prismatic_located"  # cached on the request (a new Context per execution)
_UNSET = object()


class Locator:
    """Locates deliveries in ``supervisor``'s tree; ``declared`` returns the app's declared queues (kombu's
    ``app.amqp.queues``: their routing keys are read once, on first use)."""

    def __init__(self, supervisor: Supervisor, declared: Callable[[], Mapping[str, object]]) -> None:
        self.supervisor = supervisor
        self._declared = declared
        self._routing_keys: dict[str, str] | None = None

    def _queue_for_routing_key(self, routing_key: str) -> str | None:
        if self._routing_keys is None:
            table: dict[str, str] = {}
            declared: Mapping[str, object]
            try:
                declared = self._declared()
            except Exception:  # an unusual queue config must not break task execution
                declared = {}
            for queue in self.supervisor.queues:
                declared_queue = declared.get(queue)
                table[getattr(declared_queue, "routing_key", None) or queue] = queue
            self._routing_keys = table
        return self._routing_keys.get(routing_key)

    def locate(self, delivery_info: Mapping[str, object] | None, task_name: str | None) -> Located | None:
        """The domain and child a delivery belongs to (queue, then routing key, then task globs)."""
        info = delivery_info or {}
        for candidate in (info.get("queue"), info.get("routing_key")):
            if isinstance(candidate, str):
                found = self.supervisor.locate(candidate) or self.supervisor.locate(
                    self._queue_for_routing_key(candidate)
                )
                if found:
                    return found
        if task_name:
            return self.supervisor.locate(self.supervisor.route(task_name))
        return None

    def locate_task(self, task: AnyTask) -> Located | None:
        """The domain and child of ``task``'s running request, worked out once per execution."""
        request = task.request
        found: object = getattr(request, _LOCATED, _UNSET)
        if found is _UNSET:
            delivery = request.delivery_info
            located = self.locate(delivery if isinstance(delivery, dict) else None, task.name)
            setattr(request, _LOCATED, located)
            return located
        return found if isinstance(found, tuple) else None
