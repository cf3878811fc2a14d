"""What the observability views read, declared as protocols.

Each view and score function names the pieces it reads instead of taking the whole per-app
runtime: the runtime satisfies these protocols structurally (its attributes have these names and
types), so callers pass it unchanged, and tests may pass any object with the same attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..circuits.registry import Circuits
    from ..config import Settings
    from ..store.base import Store
    from ..store.keys import Keys
    from ..supervision.tree import Supervisor

__all__ = ["CircuitSources", "HealthSources", "JsonReady", "KnowledgeRecorder", "LearningHolder", "LearningSources",
           "LessonListing", "SettingsSources", "ShedCounts", "StoreSources", "TreeSources", "shed_counts_of"]


class StoreSources(Protocol):
    """The store and its keys (what every store read needs)."""

    @property
    def store(self) -> Store: ...

    @property
    def keys(self) -> Keys: ...


class SettingsSources(StoreSources, Protocol):
    """The store and the settings (windows, thresholds, intervals)."""

    @property
    def settings(self) -> Settings: ...


class TreeSources(SettingsSources, Protocol):
    """The store, the settings and the declared supervision tree."""

    @property
    def supervisor(self) -> Supervisor: ...


class CircuitSources(StoreSources, Protocol):
    """The store and the circuits this process declared."""

    @property
    def circuits(self) -> Circuits: ...


class JsonReady(Protocol):
    """Anything with a JSON-ready form (a lesson, a knowledge metrics snapshot)."""

    def to_json(self) -> Mapping[str, object]: ...


class LessonListing(Protocol):
    """The lessons, most recently seen first (a :class:`~prismatic_celery.lessons.store.LessonStore`)."""

    def all(self, limit: int) -> Iterable[JsonReady]: ...


class KnowledgeRecorder(Protocol):
    """The knowledge metrics (a :class:`~prismatic_celery.lessons.metrics.MetricsRecorder`)."""

    def snapshot(self) -> JsonReady: ...


class LearningSources(Protocol):
    """Lessons and knowledge metrics (a :class:`~prismatic_celery.lessons.learning.Learning`)."""

    @property
    def lessons(self) -> LessonListing: ...

    @property
    def metrics(self) -> KnowledgeRecorder: ...


class LearningHolder(Protocol):
    """Lessons and knowledge metrics when enabled (None when not)."""

    @property
    def learning(self) -> LearningSources | None: ...


class HealthSources(TreeSources, CircuitSources, LearningHolder, Protocol):
    """Everything the cluster-wide health report reads: the tree, the circuits and, when enabled, lessons."""


@runtime_checkable
class ShedCounts(Protocol):
    """Messages shed per queue (a :class:`~prismatic_celery.admission.shedding.ShedStatus`)."""

    def counts(self) -> Mapping[str, object]: ...


def shed_counts_of(sources: object) -> ShedCounts | None:
    """``sources.shedding`` when it reports counts: the admission layer sets it on the runtime when it builds
    its guards, so it is not part of :class:`HealthSources` (None when absent, as in a runtime without them)."""
    found = getattr(sources, "shedding", None)
    return found if isinstance(found, ShedCounts) else None
