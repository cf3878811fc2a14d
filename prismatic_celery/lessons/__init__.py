"""LessonsLearned: capture -> classify -> correlate -> record -> apply, with honest metrics.

* :mod:`.redact`: secrets out and length bounded before anything is stored;
* :mod:`.fingerprint`: the same bug on different data gets the same fingerprint, from its message
  normalized by :mod:`.normalize` and its in-app frames (:mod:`.frames`);
* :mod:`.classify`: ``state_corruption`` / ``external_dependency`` / ``resource_exhaustion`` /
  ``logic_error``, with user overrides;
* :mod:`.store`: one lesson per fingerprint in the store (JSON, bounded, atomic updates);
* :mod:`.metrics`: knowledge metrics counted from real outcomes.
"""

from __future__ import annotations

from .classify import (
    EXTERNAL_DEPENDENCY,
    FAILURE_CLASSES,
    LOGIC_ERROR,
    RESOURCE_EXHAUSTION,
    STATE_CORRUPTION,
    classify,
)
from .fingerprint import Fingerprint, exception_type_name, fingerprint, fingerprint_exception
from .frames import in_app_frames
from .metrics import KnowledgeMetrics, MetricsRecorder
from .normalize import normalize_message
from .redact import redact, sanitize
from .store import Lesson, LessonStore, RemediationStats

__all__ = [
    "EXTERNAL_DEPENDENCY",
    "FAILURE_CLASSES",
    "LOGIC_ERROR",
    "RESOURCE_EXHAUSTION",
    "STATE_CORRUPTION",
    "Fingerprint",
    "KnowledgeMetrics",
    "Lesson",
    "LessonStore",
    "MetricsRecorder",
    "RemediationStats",
    "classify",
    "exception_type_name",
    "fingerprint",
    "fingerprint_exception",
    "in_app_frames",
    "normalize_message",
    "redact",
    "sanitize",
]
