"""Settings read from the Celery configuration (``app.conf``), validated at start-up.

Every setting is a lowercase ``prismatic_*`` key of the Celery config, so a
``celeryconfig.py`` works as usual (``PRISMATIC_*`` upper-case keys are accepted
too). Any other ``prismatic_*`` key is a typo and fails start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from .errors import ConfigurationError
from .store.base import safe_url
from .store.keys import Keys
from .store.urls import StoreTarget, check_transport_options, parse_store_url
from .supervision.tree import DEFAULT_DOMAIN_BUDGET, DEFAULT_SUPERVISOR_BUDGET, RestartBudget, Supervisor
from .validate import as_bool, as_int, as_mapping, as_seconds, as_str, as_str_list, reject_unknown

__all__ = ["SETTINGS", "Setting", "Settings", "load_settings", "settings_table"]

PREFIX = "prismatic_"


def _shed_config() -> Any:
    """The shedding settings' parsers, imported on use (that module imports this one)."""
    from .admission.shedding import config

    return config


@dataclass(frozen=True)
class Setting:
    """One documented setting: its key, default, parser, unit and meaning."""

    name: str
    default: Any
    parse: Callable[[str, Any], Any]
    unit: str
    doc: str

    @property
    def key(self) -> str:
        """The Celery config key (``prismatic_<name>``)."""
        return PREFIX + self.name


def _optional_str(setting: str, value: Any) -> str | None:
    return None if value is None else as_str(setting, value)


def _store_url(setting: str, value: Any) -> str | None:
    if value is None:
        return None
    url = as_str(setting, value)
    _store_target(url, setting)
    return url


def _store_target(url: str, setting: str = "prismatic_store_url") -> StoreTarget:
    """The deployment ``url`` names (set, or derived from the result backend or broker); checked."""
    try:
        return parse_store_url(url)
    except ValueError as exc:
        raise ConfigurationError(setting, str(exc)) from exc


def _transport_options(setting: str, value: Any) -> dict[str, Any]:
    return dict(as_mapping(setting, value))


def _circuits(setting: str, value: Any) -> Any:
    from .circuits.config import parse_circuits

    return parse_circuits(setting, value)


def _rules(setting: str, value: Any) -> Any:
    from .remediation.rules import parse_rules

    return parse_rules(setting, value)


def _class_overrides(setting: str, value: Any) -> Any:
    from .lessons.classify import parse_overrides

    return parse_overrides(value, setting=setting)


def _optional_str_list(setting: str, value: Any) -> tuple[str, ...] | None:
    return None if value is None else as_str_list(setting, value)


def _rate(setting: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigurationError(setting, f"expected a number from 0 to 1, got {value!r}")
    return float(value)


def _fraction(setting: str, value: Any) -> float:
    rate = _rate(setting, value)
    if rate == 0:
        raise ConfigurationError(setting, "must be above 0 (0 would fail a child on its first execution)")
    return rate


def _positive_int(setting: str, value: Any) -> int:
    return as_int(setting, value, minimum=1)


def _non_negative_int(setting: str, value: Any) -> int:
    return as_int(setting, value, minimum=0)


SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", True, as_bool, "bool",
            "Master switch; False leaves every task exactly as plain Celery runs it."),
    Setting("namespace", None, _optional_str, "str",
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
    Setting("domains", None, lambda s, v: v, "mapping",
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
    Setting("backoff_initial_ms", 1000, _positive_int, "ms", "Default re-run backoff: first delay."),
    Setting("backoff_max_ms", 30000, _positive_int, "ms", "Default re-run backoff: largest delay."),
    Setting("backoff_jitter_ms", 1000, _non_negative_int, "ms",
            "Default re-run backoff: random jitter added (0 to this)."),
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
    Setting("circuits", None, _circuits, "mapping",
            "Shared circuit breakers: `{name: {fail_max, reset_timeout_s, exclude, success_threshold, "
            "call_timeout_s, strict}}`."),
    Setting("circuit_cache_s", 1.0, lambda s, v: as_seconds(s, v, allow_zero=True), "s",
            "Longest staleness of a process's cached circuit state when no pub/sub message arrives."),
    Setting("circuit_pause_child", False, as_bool, "bool",
            "Also pause a child's queue (on every worker) while a circuit its task depends on is open."),
    # remediation
    Setting("remediation_rules", None, _rules, "list",
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
    Setting("in_app_modules", None, _optional_str_list, "list",
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
            lambda s, v: _shed_config().parse_resume_below(s, v),
            "messages",
            "Shedding stops when the backlog falls below this (hysteresis). Default: 80% of the threshold."),
    Setting("shed_cutoff", 5,
            lambda s, v: _shed_config().parse_cutoff(s, v),
            "0..10", "While a queue sheds, messages whose importance (0 lowest, 9 highest; see Load shedding) is "
            "below this are shed. Messages without importance never are."),
    Setting("shed_mode", "park",
            lambda s, v: _shed_config().parse_mode(s, v),
            "park|drop", "`park`: move shed messages to a capped Redis list for `shed replay`; `drop`: discard them."),
    Setting("shed_interval_s", 1.0, as_seconds, "s",
            "Backlog sampler period (each worker, in a background thread); also the longest staleness of a "
            "process's view of the shedding state. A queue that sheds is also read every 20 ms, and a message "
            "is shed only on a read at most 0.1 s old."),
    Setting("shed_park_max", 100000, _positive_int, "messages",
            "Cap of each queue's parked list (beyond it the oldest are dropped and counted as `overflowed`)."),
    Setting("shed_queues", None,
            lambda s, v: _shed_config().parse_queue_overrides(s, v),
            "mapping", "Per-queue overrides `{queue: {threshold, resume_below, cutoff, mode}}`."),
)

_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The validated settings of one app (see the README's settings table)."""

    enabled: bool
    namespace: str
    store_url: str
    store_timeout_s: float
    store_retry_s: float
    store_transport_options: dict[str, Any]
    supervisor: Supervisor
    child_failure_rate: float
    child_min_executions: int
    child_window_s: float
    hotspot_restarts: int
    hotspot_window_s: float
    pause_window_s: float
    recycle_pause_s: float
    reconcile_interval_s: float
    cooldown_initial_s: float
    cooldown_max_s: float
    backoff_initial_ms: int
    backoff_max_ms: int
    backoff_jitter_ms: int
    max_restarts_per_message: int
    stats_flush_s: float
    send_events: bool
    log_json: bool
    event_stream_maxlen: int
    circuits: Any
    circuit_cache_s: float
    circuit_pause_child: bool
    remediation_rules: Any
    default_rules: bool
    dlq_max: int
    quarantine_deliveries: int
    lessons: bool
    lessons_max: int
    lesson_min_observations: int
    lesson_min_success_rate: float
    lesson_exploration: float
    lesson_demotion_s: float
    in_app_modules: tuple[str, ...] | None
    failure_class_overrides: Any
    bulkhead_defer_s: float
    bulkhead_lease_s: float
    shed_enabled: bool
    shed_threshold: int
    shed_resume_below: int | None
    shed_cutoff: int
    shed_mode: str
    shed_interval_s: float
    shed_park_max: int
    shed_queues: Any

    @property
    def keys(self) -> Keys:
        """The namespacing helper for this app."""
        return Keys(self.namespace)


def _raw_values(conf: Mapping[str, Any]) -> dict[str, Any]:
    """Every ``prismatic_*`` key of the config, lower-cased; unknown keys rejected."""
    raw: dict[str, Any] = {}
    for key in list(conf.keys()):
        if not isinstance(key, str) or not key.lower().startswith(PREFIX):
            continue
        lowered = key.lower()
        if lowered in raw:
            raise ConfigurationError(key, f"set twice (as {lowered!r} and {key!r})")
        raw[lowered] = conf[key]
    reject_unknown("", raw, list(_BY_KEY))
    return raw


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _default_store_url(app: Celery) -> str:
    """The result backend when it is Redis, else the broker when it is Redis; the in-process ``memory://``
    broker (tests, one process) implies an in-process store. Anything else: a :class:`ConfigurationError`,
    so that no worker silently supervises with state nobody shares."""
    backend, broker = app.conf.result_backend, app.conf.broker_url
    for url in (backend, broker):
        if isinstance(url, str) and url.startswith(_REDIS_SCHEMES):
            return url
    if isinstance(broker, str) and broker.startswith("memory://"):
        return "memory://"
    raise ConfigurationError("prismatic_store_url", (
        f"not set, and neither the result backend ({safe_url(str(backend or 'none'))}) nor the broker "
        f"({safe_url(str(broker or 'none'))}) is Redis: set it to the Redis every worker shares "
        "(or to 'memory://' for state in each process, shared by nobody)"))


def load_settings(app: Celery, *, supervisor: Supervisor | None = None) -> Settings:
    """Read and validate every ``prismatic_*`` setting of ``app``.

    ``supervisor`` is a tree declared with the Python API; it cannot be combined
    with ``prismatic_domains``. Raises :class:`ConfigurationError` naming the
    first bad setting.
    """
    raw = _raw_values(app.conf)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = raw.get(setting.key, setting.default)
        values[setting.name] = setting.default if value is None else setting.parse(setting.key, value)

    if values["backoff_initial_ms"] > values["backoff_max_ms"]:
        raise ConfigurationError("prismatic_backoff_initial_ms", "must not exceed prismatic_backoff_max_ms")
    if values["cooldown_initial_s"] > values["cooldown_max_s"]:
        raise ConfigurationError("prismatic_cooldown_initial_s", "must not exceed prismatic_cooldown_max_s")

    domains = values.pop("domains")
    domain_budget = values.pop("domain_budget")
    supervisor_budget = values.pop("supervisor_budget")
    if supervisor is not None and domains is not None:
        raise ConfigurationError(
            "prismatic_domains", "the tree is declared twice: pass either install(app, supervisor=...) or this setting"
        )
    if supervisor is None:
        supervisor = Supervisor.from_config(
            "prismatic_domains", domains or {}, budget=supervisor_budget, domain_budget=domain_budget
        )

    _check_rule_domains(values.get("remediation_rules") or (), supervisor)
    namespace = values.pop("namespace") or app.main or "celery"
    try:
        Keys(namespace)
    except ValueError as exc:
        raise ConfigurationError("prismatic_namespace", str(exc)) from exc
    store_url = values.pop("store_url") or _default_store_url(app)
    values["store_transport_options"] = check_transport_options(
        "prismatic_store_transport_options", _store_target(store_url), values["store_transport_options"])
    return Settings(namespace=namespace, store_url=store_url, supervisor=supervisor, **values)


def _check_rule_domains(rules: Any, supervisor: Supervisor) -> None:
    """A rule matching a domain the tree does not declare would never match: a typo, refused at start."""
    known = [d.name for d in supervisor.domain_list]
    for index, rule in enumerate(rules):
        domain = getattr(getattr(rule, "match", None), "domain", None)
        if domain is not None and domain not in known:
            raise ConfigurationError(f"prismatic_remediation_rules[{index}].match.domain",
                                     f"no domain {domain!r} in the tree; declared: {', '.join(known) or 'none'}")


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


if __name__ == "__main__":  # pragma: no cover - documentation helper: python -m prismatic_celery.config README.md
    import sys

    if len(sys.argv) > 1:
        print("updated" if update_readme(sys.argv[1]) else "unchanged")
    else:
        print(settings_table())
