"""The fields of each supervision event: the Celery events' bodies and the event stream's entries.

:data:`EVENT_FIELDS` is the reference (the README's table is :func:`event_fields_table`; the tests check
that every event type is described and that emitted events carry only described fields).
"""

from __future__ import annotations

__all__ = ["EVENT_FIELDS", "TASK_CONTEXT", "event_fields_table"]

#: Fields shared by the events of one crashed task (``hostname`` becomes the Celery event's own field).
TASK_CONTEXT = {
    "child": "the child's queue",
    "task": "task name",
    "task_id": "task id (the same across its re-runs)",
    "exception": "exception class name",
}

#: The body of each ``supervision-<type>`` Celery event, and of the ``prismatic:{<ns>}:events`` stream
#: entries. Every Celery event also carries Celery's own ``type``, ``hostname`` (the worker),
#: ``timestamp``, ``utcoffset``, ``pid`` and ``clock``. Stream entries add ``type`` (``dead_letter``
#: for ``supervision-dead-letter``), ``time`` (seconds since the epoch) and ``hostname``; pause
#: entries written by the restart script also ``paused`` (how many queues it paused). A field that
#: does not apply to an event is absent. Each failed message has exactly one event (remediation,
#: dead-letter or crash); a child failure adds restart, and pause or escalation when they follow.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "restart": {
        "domain": "the child's domain", "child": "the child that failed (its queue)",
        **{k: f"{v} (the failure that tripped it)" for k, v in TASK_CONTEXT.items() if k != "child"},
        "executions": "the child's executions in its window when it failed",
        "failures": "failed executions among them",
        "window_s": "the window's length in seconds",
        "child_restarts": "restarts of the child within the hotspot window, this one included",
        "domain_restarts": "restarts of the domain within its budget period, this one included",
    },
    "remediation": {
        "domain": "the child's domain", **TASK_CONTEXT,
        "action": "remediation applied: retry_with_backoff, circuit_break, restart_child, recycle_process, "
                  "redeliver (a pool-process death)",
        "rule": "name of the rule (or lesson) that chose it; empty for an unnamed rule",
        "failure_class": "state_corruption, external_dependency, resource_exhaustion or logic_error",
        "fingerprint": "the failure's fingerprint (its lesson)",
        "attempt": "re-run number of this message (1 = first re-run; the plugin's own count, not Celery's retries)",
        "countdown_s": "seconds before the re-run (backoff, or the end of the domain's cool-down plus jitter)",
        "deaths": "pool-process deaths this message caused so far (pool deaths only)",
    },
    "dead_letter": {
        "domain": "the child's domain", **TASK_CONTEXT,
        "reason": "restarts_exhausted, dead_letter, shed, escalated: <reason>, or quarantined (killed its pool "
                  "process prismatic_quarantine_deliveries times)",
        "action": "the remediation the rules (or a lesson) chose", "rule": "its rule",
        "failure_class": "the failure class", "fingerprint": "the failure's fingerprint",
        "attempts": "executions of the message, this one included",
        "deaths": "pool-process deaths it caused (quarantine only)",
    },
    "escalation": {
        "domain": "the domain", **TASK_CONTEXT,
        "reason": "supervisor_budget_exceeded (the domain escalated: CRITICAL), or the escalate action's reason "
                  "(e.g. unknown_failure_pattern, disk_full), once per new failure pattern",
        "supervisor_restarts": "domain restarts counted by the top-level supervisor (budget case)",
        "cooldown_s": "how long the domain stays paused (budget case)",
        "action": "remediation that escalated (pattern case)",
        "rule": "rule name (pattern case)",
        "failure_class": "failure class (pattern case)",
        "fingerprint": "the new failure pattern (pattern case)",
    },
    "circuit": {
        "name": "circuit breaker name",
        "old_state": "closed, open or half-open",
        "new_state": "closed, open or half-open",
        "reason": "why it changed (threshold, reset-timeout, forced, trial-succeeded...)",
        "fail_counter": "failures counted when it changed",
        "fail_max": "failures that open it",
        "retry_after_s": "seconds until a trial call may half-open it (0 unless open)",
    },
    "shed": {
        "domain": "the queue's domain",
        "queue": "the shedding queue",
        "task": "task name",
        "task_id": "task id",
        "backlog": "the queue's backlog at the decision (the worker's last read minus what it received since)",
        "threshold": "backlog above which the queue sheds",
        "importance": "the message's importance (0 lowest, 9 highest)",
        "cutoff": "messages below this importance are shed",
        "mode": "park (kept, replayable) or drop",
    },
    "pause": {
        "domain": "the domain whose queues stopped being consumed",
        "queues": "comma-separated queues paused",
        "reason": "rest_for_one, one_for_all, cooldown, escalated, manual or circuit",
        "cooldown_s": "pause length in seconds (cool-down, escalation and manual pauses)",
        "by": "who paused (manual pauses)",
        "child": "the child whose failure paused them (strategy, cool-down and escalation pauses)",
        **{k: f"{v} (of the failure that paused)" for k, v in TASK_CONTEXT.items() if k != "child"},
    },
    "resume": {
        "domain": "the domain resumed",
        "queues": "comma-separated queues whose pause by this cause ended",
        "reason": "child_recovered (the failed child succeeded) or operator",
        "child": "the child whose success ended its rest_for_one pauses (child_recovered)",
        "at": "when, seconds since the epoch (child_recovered)",
        "by": "who resumed (operator)",
    },
    "crash": {
        "domain": "the child's domain", **TASK_CONTEXT,
        "outcome": "normal_exit (a transient child's normal exception), not_requeueable (a direct call), "
                   "temporary (a temporary child's message: it fails as in plain Celery)",
        "action": "remediation the rules chose", "rule": "rule name", "failure_class": "failure class",
        "fingerprint": "the failure's fingerprint",
        "deaths": "pool-process deaths it caused (a temporary child's pool death)",
    },
}


def event_fields_table() -> str:
    """:data:`EVENT_FIELDS` as a Markdown table (for the README)."""
    lines = ["| Celery event | Field | Meaning |", "|---|---|---|"]
    for kind, fields in EVENT_FIELDS.items():
        for index, (name, meaning) in enumerate(fields.items()):
            label = f"`supervision-{kind.replace('_', '-')}`" if index == 0 else ""
            lines.append(f"| {label} | `{name}` | {meaning} |")
    return "\n".join(lines)
