"""What operators (CLI, health, Prometheus) read about load shedding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import QueuePolicy
from .park import parked_key, totals_key
from .state import backlog_key, read_states

if TYPE_CHECKING:
    from ...store import Store
    from ...store.keys import Keys
    from ...supervision.tree import Supervisor

__all__ = ["COUNTERS", "ShedStatus"]

COUNTERS = ("parked", "dropped", "overflowed", "replayed", "purged")


def _int(value: object) -> int:
    if not isinstance(value, (str, bytes, int, float)):
        return 0
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


class ShedStatus:
    """Read-only view of every supervised queue's shedding (``runtime.shedding``)."""

    def __init__(self, store: Store, keys: Keys, supervisor: Supervisor, policies: Mapping[str, QueuePolicy]) -> None:
        self.store, self.keys, self.supervisor = store, keys, supervisor
        self.policies = dict(policies)

    def totals(self) -> dict[str, dict[str, int]]:
        """``{queue: {parked, dropped, overflowed, replayed, purged}}`` since the counters began."""
        raw = self.store.hgetall(totals_key(self.keys))
        out: dict[str, dict[str, int]] = {q: dict.fromkeys(COUNTERS, 0) for q in self.policies}
        for field, value in raw.items():
            queue, _, counter = field.rpartition(":")
            if counter in COUNTERS and queue:
                out.setdefault(queue, dict.fromkeys(COUNTERS, 0))[counter] = _int(value)
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Messages shed per queue and mode: ``{queue: {"park": n, "drop": n}}`` (for health and metrics)."""
        return {q: {"park": t["parked"], "drop": t["dropped"]} for q, t in self.totals().items()}

    def overview(self) -> list[dict[str, Any]]:
        """One row per supervised queue: state, last sampled backlog, policy, parked now, totals."""
        store, keys = self.store, self.keys
        queues = list(self.policies)
        states = read_states(store, keys, queues)
        backlogs = store.hgetall(backlog_key(keys))
        totals = self.totals()
        rows: list[dict[str, Any]] = []
        for queue in queues:
            policy = self.policies[queue]
            state = states.get(queue)
            located = self.supervisor.locate(queue)
            rows.append({
                "queue": queue,
                "domain": located[0].name if located else None,
                "shedding": state is not None,
                "since": state.since if state else None,
                "backlog": _int(backlogs[queue]) if queue in backlogs else None,
                "sampled_at": float(backlogs[f"{queue}:at"]) if f"{queue}:at" in backlogs else None,
                "threshold": policy.threshold,
                "resume_below": policy.resume_below,
                "cutoff": policy.cutoff,
                "mode": policy.mode,
                "parked_now": store.list_len(parked_key(keys, queue)),
                "totals": totals.get(queue, dict.fromkeys(COUNTERS, 0)),
            })
        return rows
