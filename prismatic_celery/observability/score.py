"""The health score: a pure function of counts of what holds *now* in the cluster.

``score = max(0, 100 - sum of penalties)``:

| Condition | Points each | Cap |
|---|---|---|
| escalated domain (its supervisor budget is exhausted, operators are needed) | 40 | none |
| domain in cool-down (its restart budget was exceeded) | 20 | none |
| open circuit | 15 | none |
| hotspot child (more than ``prismatic_hotspot_restarts`` restarts in the window) | 10 | none |
| half-open circuit | 5 | none |
| paused child, other than one paused by its domain's cool-down or escalation | 5 | none |
| unserved child (no live worker consumes its queue) | 10 | none |
| restart within the hotspot window, all children together | 1 | 20 |

The state is ``escalated`` whenever a domain is escalated (whatever the score),
else ``healthy`` from 80, ``degraded`` from 50 and ``critical`` below 50. When the
store does not answer, nothing above can be known: the state is ``unknown``, the
score None, and every child's status ``unknown`` (see
:func:`~prismatic_celery.observability.unknown.unknown_health`). The score depends
only on cluster-wide state, so every worker reports the cluster's score; memory and
process counts are reported, never scored (they move on their own and have no
threshold that means the same for every app).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

__all__ = ["CAPS", "DEGRADED_FROM", "HEALTHY_FROM", "PENALTIES", "Penalty", "PenaltyJson", "Score", "ScoreInputs",
           "health_score"]

#: Points taken off per occurrence of each condition (see the module docstring).
PENALTIES: dict[str, int] = {
    "escalated_domain": 40,
    "cooldown_domain": 20,
    "open_circuit": 15,
    "hotspot": 10,
    "half_open_circuit": 5,
    "paused_child": 5,
    "unserved_child": 10,
    "recent_restart": 1,
}
#: Largest total penalty of a condition (absent: no cap).
CAPS: dict[str, int] = {"recent_restart": 20}
HEALTHY_FROM = 80
DEGRADED_FROM = 50


@dataclass(frozen=True)
class ScoreInputs:
    """What the score is computed from (counts of what holds now)."""

    escalated_domains: int = 0
    cooldown_domains: int = 0
    open_circuits: int = 0
    half_open_circuits: int = 0
    hotspots: int = 0
    paused_children: int = 0
    unserved_children: int = 0
    recent_restarts: int = 0

    def counts(self) -> dict[str, int]:
        """Each penalty's name with its count."""
        return {
            "escalated_domain": self.escalated_domains,
            "cooldown_domain": self.cooldown_domains,
            "open_circuit": self.open_circuits,
            "hotspot": self.hotspots,
            "half_open_circuit": self.half_open_circuits,
            "paused_child": self.paused_children,
            "unserved_child": self.unserved_children,
            "recent_restart": self.recent_restarts,
        }


class PenaltyJson(TypedDict):
    """A penalty as reported (``penalties`` of the health report)."""

    reason: str
    count: int
    points: int


@dataclass(frozen=True)
class Penalty:
    """Points taken off for one condition."""

    reason: str
    count: int
    points: int

    def to_json(self) -> PenaltyJson:
        """JSON-ready form."""
        return {"reason": self.reason, "count": self.count, "points": self.points}


@dataclass(frozen=True)
class Score:
    """A health score 0-100, its state and the penalties that made it."""

    score: int
    state: str
    penalties: tuple[Penalty, ...] = field(default_factory=tuple)


def health_score(inputs: ScoreInputs) -> Score:
    """The documented formula: 100 minus capped penalties, clamped to 0..100 (a pure function)."""
    penalties = []
    for reason, count in inputs.counts().items():
        if count <= 0:
            continue
        points = PENALTIES[reason] * count
        if reason in CAPS:
            points = min(points, CAPS[reason])
        penalties.append(Penalty(reason, count, points))
    score = max(0, min(100, 100 - sum(p.points for p in penalties)))
    if inputs.escalated_domains:
        state = "escalated"
    elif score >= HEALTHY_FROM:
        state = "healthy"
    elif score >= DEGRADED_FROM:
        state = "degraded"
    else:
        state = "critical"
    return Score(score, state, tuple(penalties))
