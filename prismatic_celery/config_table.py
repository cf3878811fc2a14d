"""The table of every ``prismatic_*`` setting: key, default, parser, unit and meaning.

:mod:`.config` reads the Celery configuration against it; the README's settings table is generated
from it (``python -m prismatic_celery.config_table README.md``). A renamed setting's old name is listed
in :data:`RENAMED`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from .admission.shedding.config import parse_cutoff, parse_mode, parse_queue_overrides, parse_resume_below
from .circuits.config import parse_circuits
from .errors import ConfigurationError
from .remediation.rules import parse_overrides, parse_rules
from .store.urls import StoreTarget, parse_store_url
from .supervision.tree import DEFAULT_DOMAIN_BUDGET, DEFAULT_SUPERVISOR_BUDGET, RestartBudget
from .validate import as_bool, as_int, as_mapping, as_seconds, as_str, as_str_list

__all__ = ["PREFIX", "RENAMED", "SETTINGS", "Setting", "settings_table", "store_target", "update_readme"]

PREFIX = "prismatic_"

#: Old name of a renamed setting -> (its new name, how many of the old unit make one of the new). The old
#: name is still accepted (:func:`.config.load_settings` converts it and warns); setting both names fails.
RENAMED: Mapping[str, tuple[str, int]] = {
    "prismatic_backoff_initial_ms": ("prismatic_backoff_initial_s", 1000),
    "prismatic_backoff_max_ms": ("prismatic_backoff_max_s", 1000),
    "prismatic_backoff_jitter_ms": ("prismatic_backoff_jitter_s", 1000),
}


@dataclass(frozen=True)
class Setting:
    """One documented setting: its key, default, parser, unit and meaning.

    ``parse`` gets the key and the configured value, never None (None means the default).
    """

    name: str
    default: object
    parse: Callable[[str, object], object]
    unit: str
    doc: str

    @property
    def key(self) -> str:
        """The Celery config key (``prismatic_<name>``)."""
        return PREFIX + self.name


def _store_url(setting: str, value: object) -> str:
    url = as_str(setting, value)
    store_target(url, setting)
    return url


def store_target(url: str, setting: str = "prismatic_store_url") -> StoreTarget:
    """The deployment ``url`` names (set, or derived from the result backend or broker); checked."""
    try:
        return parse_store_url(url)
    except ValueError as exc:
        raise ConfigurationError(setting, str(exc)) from exc


def _transport_options(setting: str, value: object) -> dict[str, object]:
    return dict(as_mapping(setting, value))


def _class_overrides(setting: str, value: object) -> dict[type[BaseException] | str, str]:
    return parse_overrides(value, setting=setting)


def _rate(setting: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigurationError(setting, f"expected a number from 0 to 1, got {value!r}")
    return float(value)


def _fraction(setting: str, value: object) -> float:
    rate = _rate(setting, value)
    if rate == 0:
        raise ConfigurationError(setting, "must be above 0 (0 would fail a child on its first execution)")
    return rate


def _delay_s(setting: str, value: object, *, allow_zero: bool = False) -> float:
    """Seconds of a re-run delay, which is counted in whole milliseconds (so at least 0.001 unless zero)."""
    seconds = as_seconds(setting, value, allow_zero=allow_zero)
    if 0 < seconds < 0.001:
        raise ConfigurationError(setting, f"must be at least 0.001 (one millisecond), got {value!r}")
    return seconds


_positive_int = partial(as_int, minimum=1)
_non_negative_int = partial(as_int, minimum=0)


SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", True, as_bool, "bool",
            "Master switch; False leaves every task exactly as plain Celery runs it."),
    Setting("namespace", None, as_str, "str",
            "The `<app>` part of every Redis key. Default: the app's main name, else `celery`."),
    Setting("store_url", None, _store_url, "URL",
            "Supervision store. Default: the result backend when it is Redis, else the broker when it is Redis "
            "(or the in-process `memory://` broker); anything else must set it. `memory://` (state in each "
            "process, shared by nobody) is used only when asked for."),
    Setting("store_timeout_s", 0.5, as_seconds, "s", "Socket timeout of every store command."),
    Setting("store_retry_s", 1.0, as_seconds, "s",
            "After a store outage, how long decisions use in-process state before Redis is tried again."),
    Setting("store_transport_options", {}, _transport_options, "mapping",
            "Options of the store's connection, as Celery's `broker_transport_options`: `master_name` (required "
            "with `sentinel://`), `sentinel_kwargs`, `min_other_sentinels`; `username` and `password` with any "
            "Redis URL (see Deployment)."),
    Setting("domains", None, lambda _, v: v, "mapping",
            "The supervision tree: `{domain: {strategy, children, budget, concurrency}}` (see below)."),
    Setting("domain_budget", DEFAULT_DOMAIN_BUDGET, RestartBudget.from_config, "{max_restarts, period_s}",
            "Default restart budget of a domain (restarts in seconds)."),
    Setting("supervisor_budget", DEFAULT_SUPERVISOR_BUDGET, RestartBudget.from_config, "{max_restarts, period_s}",
            "Top-level budget: domain restarts allowed before escalating to operators."),
    Setting("child_failure_rate", 0.5, _fraction, "0..1",
            "A child fails (and its strategy and budget act) when at least this fraction of its executions in the "
            "window failed. Half, as Resilience4j's default: a busy queue with a steady 1-5 % error rate is "
            "healthy and never trips; a queue where every message fails trips at once."),
    Setting("child_min_executions", 20, _positive_int, "executions",
            "Executions of a child in the window before its failure rate means anything (a few failures of a "
            "quiet queue are message failures, handled by remediation alone)."),
    Setting("child_window_s", 10.0, as_seconds, "s",
            "Sliding window of a child's executions, counted across the cluster. Short enough that a busy queue "
            "that starts failing every message trips within about half of it."),
    Setting("hotspot_restarts", 3, _positive_int, "restarts",
            "A child with more restarts than this in the window is a hotspot."),
    Setting("hotspot_window_s", 300.0, as_seconds, "s", "Sliding window of hotspot detection."),
    Setting("pause_window_s", 30.0, as_seconds, "s",
            "Longest pause of the children a `rest_for_one`/`one_for_all` restart pauses."),
    Setting("recycle_pause_s", 2.0, as_seconds, "s",
            "How long a `one_for_all` restart pauses the domain while its pool processes are recycled."),
    Setting("reconcile_interval_s", 1.0, as_seconds, "s",
            "Worker timer period: pauses read from Redis are applied within this time."),
    Setting("cooldown_initial_s", 5.0, as_seconds, "s", "First cool-down of a domain that exceeded its budget."),
    Setting("cooldown_max_s", 300.0, as_seconds, "s", "Longest cool-down (exponential growth with jitter stops here)."),
    Setting("backoff_initial_s", 1.0, _delay_s, "s",
            "Default re-run backoff: first delay (was `prismatic_backoff_initial_ms`, still read, deprecated)."),
    Setting("backoff_max_s", 30.0, _delay_s, "s",
            "Default re-run backoff: largest delay (was `prismatic_backoff_max_ms`, still read, deprecated)."),
    Setting("backoff_jitter_s", 1.0, partial(_delay_s, allow_zero=True), "s",
            "Default re-run backoff: random jitter added, 0 to this (was `prismatic_backoff_jitter_ms`, still "
            "read, deprecated)."),
    Setting("max_restarts_per_message", 5, _non_negative_int, "restarts",
            "Re-runs of one message before the failure is final."),
    Setting("stats_flush_s", 5.0, as_seconds, "s",
            "How often each process flushes its task counters to Redis (never per task)."),
    Setting("send_events", True, as_bool, "bool",
            "Send `supervision-*` Celery events (needs `-E` / `worker_send_task_events`)."),
    Setting("log_json", False, as_bool, "bool", "Write supervision log lines as JSON instead of `key=value`."),
    Setting("event_stream_maxlen", 1000, _positive_int, "entries",
            "Cap of the Redis stream of recent supervision events."),
    # circuit breakers
    Setting("circuits", None, parse_circuits, "mapping",
            "Shared circuit breakers: `{name: {fail_max, reset_timeout_s, exclude, success_threshold, "
            "call_timeout_s, strict}}`."),
    Setting("circuit_cache_s", 1.0, partial(as_seconds, allow_zero=True), "s",
            "Longest staleness of a process's cached circuit state when no pub/sub message arrives."),
    Setting("circuit_pause_child", False, as_bool, "bool",
            "Also pause a child's queue (on every worker) while a circuit its task depends on is open."),
    # remediation
    Setting("remediation_rules", None, parse_rules, "list",
            "Ordered remediation rules `[{match: {...}, action: ..., name}]`, tried before the defaults."),
    Setting("default_rules", True, as_bool, "bool", "Append the built-in remediation rules after yours."),
    Setting("dlq_max", 10000, _positive_int, "messages", "Cap of each domain's dead-letter list (oldest dropped)."),
    Setting("quarantine_deliveries", 3, _positive_int, "deliveries",
            "A message whose execution killed its pool process this many times goes to the dead-letter queue."),
    # lessons learned
    Setting("lessons", True, as_bool, "bool", "Record lessons and apply the remediations that worked."),
    Setting("lessons_max", 1000, _positive_int, "lessons", "Lessons kept (least recently seen evicted)."),
    Setting("lesson_min_observations", 3, _positive_int, "outcomes",
            "Outcomes a remediation needs before a lesson applies it automatically."),
    Setting("lesson_min_success_rate", 0.8, _rate, "0..1",
            "Success rate a remediation needs before a lesson applies it automatically."),
    Setting("lesson_exploration", 0.1, _rate, "0..1",
            "Chance that a message's first crash tries a candidate remediation not yet proven, instead of the best."),
    Setting("lesson_demotion_s", 600.0, as_seconds, "s",
            "How long a remediation that keeps failing for a fingerprint is not chosen again."),
    Setting("in_app_modules", None, as_str_list, "list",
            "Module prefixes whose frames fingerprint a crash. Default: every frame outside the standard "
            "library, site-packages and Celery."),
    Setting("failure_class_overrides", None, _class_overrides, "mapping",
            "`{exception class or dotted name: failure class}` checked before the built-in classification."),
    # bulkheads and load shedding
    Setting("bulkhead_defer_s", 1.0, as_seconds, "s",
            "A task over its domain's concurrency cap is put back on its queue to run after this long (plus up "
            "to 50% jitter), its retry count unchanged."),
    Setting("bulkhead_lease_s", 30.0, as_seconds, "s",
            "Expiry of a cluster-wide slot lease (`cluster_concurrency`), renewed every third of it while the task "
            "runs: a dead worker's slots free themselves."),
    Setting("shed_enabled", True, as_bool, "bool",
            "Sample the supervised queues' backlogs and shed low-importance messages above the threshold."),
    Setting("shed_threshold", 1000, _positive_int, "messages",
            "A supervised queue starts shedding when its backlog is above this."),
    Setting("shed_resume_below", None,
            parse_resume_below,
            "messages",
            "Shedding stops when the backlog falls below this (hysteresis). Default: 80% of the threshold."),
    Setting("shed_cutoff", 5,
            parse_cutoff,
            "0..10", "While a queue sheds, messages whose importance (0 lowest, 9 highest; see Load shedding) is "
            "below this are shed. Messages without importance never are."),
    Setting("shed_mode", "park",
            parse_mode,
            "park|drop", "`park`: move shed messages to a capped Redis list for `shed replay`; `drop`: discard them."),
    Setting("shed_interval_s", 1.0, as_seconds, "s",
            "Backlog sampler period (each worker, in a background thread); also the longest staleness of a "
            "process's view of the shedding state. A queue that sheds is also read every 20 ms, and a message "
            "is shed only on a read at most 0.1 s old."),
    Setting("shed_park_max", 100000, _positive_int, "messages",
            "Cap of each queue's parked list (beyond it the oldest are dropped and counted as `overflowed`)."),
    Setting("shed_queues", None,
            parse_queue_overrides,
            "mapping", "Per-queue overrides `{queue: {threshold, resume_below, cutoff, mode}}`."),
)


def settings_table() -> str:
    """The settings as a Markdown table (the README's table is generated from this)."""
    lines = ["| Setting | Default | Unit | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default
        if isinstance(default, RestartBudget):
            default = {"max_restarts": default.max_restarts, "period_s": default.period_s}
        shown = "derived" if default is None else f"`{default!r}`"
        lines.append(f"| `{s.key}` | {shown} | {s.unit} | {s.doc} |")
    return "\n".join(lines)


def update_readme(path: str) -> bool:
    """Rewrite the table between the README's ``settings:start``/``settings:end`` markers; True if changed."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, _, rest = text.partition("<!-- settings:start -->\n")
    _, _, tail = rest.partition("\n<!-- settings:end -->")
    updated = f"{head}<!-- settings:start -->\n{settings_table()}\n<!-- settings:end -->{tail}"
    if updated != text:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(updated)
    return updated != text


if __name__ == "__main__":  # pragma: no cover - documentation helper: python -m prismatic_celery.config_table README.md
    import sys

    if len(sys.argv) > 1:
        print("updated" if update_readme(sys.argv[1]) else "unchanged")
    else:
        print(settings_table())
