"""Load-shedding settings: parsers for the ``prismatic_shed_*`` settings and the per-queue policy.

A queue's policy is the global settings overlaid with its entry in
``prismatic_shed_queues``. Everything is validated when the runtime is built
(worker start, ``celery supervision check``), and an error names the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import ConfigurationError
from ...validate import as_choice, as_int, as_mapping, reject_unknown

if TYPE_CHECKING:
    from ...supervision.tree import Supervisor

__all__ = [
    "IMPORTANCE_MAX",
    "MODES",
    "QueuePolicy",
    "parse_cutoff",
    "parse_mode",
    "parse_queue_overrides",
    "parse_resume_below",
    "queue_policies",
]

MODES = ("park", "drop")
IMPORTANCE_MAX = 9
"""Importance runs from 0 (least important) to 9 (most important) on every broker."""
_OVERRIDE_KEYS = ("threshold", "resume_below", "cutoff", "mode")


def parse_mode(setting: str, value: Any) -> str:
    """``park`` (move to a replayable list) or ``drop`` (discard)."""
    return as_choice(setting, value, MODES)


def parse_cutoff(setting: str, value: Any) -> int:
    """0 to 10: messages whose importance is below it are shed (0 sheds nothing, 10 every marked message)."""
    cutoff = as_int(setting, value, minimum=0)
    if cutoff > IMPORTANCE_MAX + 1:
        raise ConfigurationError(setting, f"expected 0 to {IMPORTANCE_MAX + 1}, got {cutoff}")
    return cutoff


def parse_resume_below(setting: str, value: Any) -> int | None:
    """A backlog in messages (None: derived from the threshold)."""
    return None if value is None else as_int(setting, value, minimum=1)


def parse_queue_overrides(setting: str, value: Any) -> dict[str, dict[str, Any]]:
    """``{queue: {threshold, resume_below, cutoff, mode}}``, each key optional."""
    data = as_mapping(setting, value)
    parsed: dict[str, dict[str, Any]] = {}
    for queue, spec in data.items():
        where = f"{setting}.{queue}"
        entry = as_mapping(where, spec)
        reject_unknown(where, entry, _OVERRIDE_KEYS)
        out: dict[str, Any] = {}
        if "threshold" in entry:
            out["threshold"] = as_int(f"{where}.threshold", entry["threshold"], minimum=1)
        if "resume_below" in entry:
            out["resume_below"] = as_int(f"{where}.resume_below", entry["resume_below"], minimum=1)
        if "cutoff" in entry:
            out["cutoff"] = parse_cutoff(f"{where}.cutoff", entry["cutoff"])
        if "mode" in entry:
            out["mode"] = parse_mode(f"{where}.mode", entry["mode"])
        parsed[str(queue)] = out
    return parsed


@dataclass(frozen=True)
class QueuePolicy:
    """How one supervised queue sheds.

    Shedding starts when the sampled backlog is above ``threshold`` and stops
    when it falls below ``resume_below`` (hysteresis). While it lasts, messages
    whose importance is below ``cutoff`` are parked or dropped (``mode``).
    """

    queue: str
    threshold: int
    resume_below: int
    cutoff: int
    mode: str


def default_resume_below(threshold: int) -> int:
    """80% of the threshold (at least 1): the default lower mark."""
    return max(1, threshold * 4 // 5)


class ShedSettings(Protocol):
    """The settings :func:`queue_policies` reads (``config.Settings``; config_table imports this module)."""

    @property
    def shed_threshold(self) -> int: ...
    @property
    def shed_resume_below(self) -> int | None: ...
    @property
    def shed_cutoff(self) -> int: ...
    @property
    def shed_mode(self) -> str: ...
    @property
    def shed_queues(self) -> Mapping[str, Mapping[str, object]] | None: ...


def queue_policies(settings: ShedSettings, supervisor: Supervisor) -> dict[str, QueuePolicy]:
    """The policy of every supervised queue (ConfigurationError naming the setting when inconsistent)."""
    overrides: Mapping[str, Mapping[str, Any]] = settings.shed_queues or {}
    for queue in overrides:
        if supervisor.locate(queue) is None:
            raise ConfigurationError(
                f"prismatic_shed_queues.{queue}",
                f"is not a supervised queue; supervised: {', '.join(supervisor.queues) or 'none'}",
            )
    policies: dict[str, QueuePolicy] = {}
    for queue in supervisor.queues:
        own = overrides.get(queue, {})
        threshold = int(own.get("threshold", settings.shed_threshold))
        if "resume_below" in own:
            resume, setting = int(own["resume_below"]), f"prismatic_shed_queues.{queue}.resume_below"
        elif settings.shed_resume_below is not None and "threshold" not in own:
            resume, setting = settings.shed_resume_below, "prismatic_shed_resume_below"
        else:
            resume, setting = default_resume_below(threshold), "prismatic_shed_resume_below"
        if resume > threshold:
            raise ConfigurationError(setting,
                                     f"{resume} must not exceed the threshold of queue {queue!r} ({threshold})")
        policies[queue] = QueuePolicy(
            queue=queue, threshold=threshold, resume_below=resume,
            cutoff=int(own.get("cutoff", settings.shed_cutoff)), mode=str(own.get("mode", settings.shed_mode)),
        )
    return policies
