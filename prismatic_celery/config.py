"""Settings read from the Celery configuration (``app.conf``), validated at start-up.

Every setting is a lowercase ``prismatic_*`` key of the Celery config (declared in
:mod:`.config_table`), so a ``celeryconfig.py`` works as usual (``PRISMATIC_*`` upper-case keys are
accepted too). Every other ``prismatic_*`` key is a typo and fails start-up, except a renamed
setting's old name: it is converted to the new one, with a ``DeprecationWarning`` and a log warning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from .circuits.config import CircuitSpec
from .config_table import PREFIX, RENAMED, SETTINGS, store_target
from .errors import ConfigurationError
from .log import get_logger, log_event
from .remediation.rules import Rule
from .store.base import safe_url
from .store.keys import Keys
from .store.urls import check_transport_options
from .supervision.tree import Supervisor
from .validate import as_int, reject_unknown

__all__ = ["Settings", "load_settings"]

_log = get_logger("config")

_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The validated settings of one app (see the README's settings table)."""

    enabled: bool
    namespace: str
    store_url: str
    store_timeout_s: float
    store_retry_s: float
    store_transport_options: dict[str, object]
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
    backoff_initial_s: float
    backoff_max_s: float
    backoff_jitter_s: float
    max_restarts_per_message: int
    stats_flush_s: float
    send_events: bool
    log_json: bool
    event_stream_maxlen: int
    circuits: dict[str, CircuitSpec] | None
    circuit_cache_s: float
    circuit_pause_child: bool
    remediation_rules: tuple[Rule, ...] | None
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
    failure_class_overrides: dict[type[BaseException] | str, str] | None
    bulkhead_defer_s: float
    bulkhead_lease_s: float
    shed_enabled: bool
    shed_threshold: int
    shed_resume_below: int | None
    shed_cutoff: int
    shed_mode: str
    shed_interval_s: float
    shed_park_max: int
    shed_queues: dict[str, dict[str, object]] | None

    @property
    def keys(self) -> Keys:
        """The namespacing helper for this app."""
        return Keys(self.namespace)


def _raw_values(conf: Mapping[str, object]) -> dict[str, object]:
    """Every ``prismatic_*`` key of the config, lower-cased, renamed ones converted; unknown keys rejected."""
    raw: dict[str, object] = {}
    for key in list(conf.keys()):
        if not isinstance(key, str) or not key.lower().startswith(PREFIX):
            continue
        lowered = key.lower()
        if lowered in raw:
            raise ConfigurationError(key, f"set twice (as {lowered!r} and {key!r})")
        raw[lowered] = conf[key]
    reject_unknown("", raw, [*_BY_KEY, *RENAMED])
    return raw


def _convert_renamed(raw: dict[str, object]) -> dict[str, str]:
    """Replace each old name in ``raw`` by its new one, the value converted, with a ``DeprecationWarning`` and
    a log warning; returns ``{new: old}`` so that errors name what was written. Both names set: an error."""
    spelled: dict[str, str] = {}
    for old in [key for key in raw if key in RENAMED]:
        new, per_unit = RENAMED[old]
        if new in raw:
            raise ConfigurationError(old, f"set together with {new}, its new name: set only {new}")
        value = raw.pop(old)
        if value is not None:
            value = _BY_KEY[new].parse(old, as_int(old, value, minimum=0) / per_unit)
            warnings.warn(f"{old} is deprecated: set {new} = {value!r} instead", DeprecationWarning, stacklevel=3)
            log_event(logging.WARNING, "setting-deprecated", _log, setting=old, use=new, value=value)
        raw[new], spelled[new] = value, old
    return spelled


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
    spelled = _convert_renamed(raw)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = raw.get(setting.key, setting.default)
        values[setting.name] = setting.default if value is None else setting.parse(setting.key, value)

    if values["backoff_initial_s"] > values["backoff_max_s"]:
        initial, largest = (spelled.get(k, k) for k in ("prismatic_backoff_initial_s", "prismatic_backoff_max_s"))
        raise ConfigurationError(initial, f"must not exceed {largest}")
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
        "prismatic_store_transport_options", store_target(store_url), values["store_transport_options"])
    return Settings(namespace=namespace, store_url=store_url, supervisor=supervisor, **values)


def _check_rule_domains(rules: Iterable[Rule], supervisor: Supervisor) -> None:
    """A rule matching a domain the tree does not declare would never match: a typo, refused at start."""
    known = [d.name for d in supervisor.domain_list]
    for index, rule in enumerate(rules):
        domain = rule.match.domain
        if domain is not None and domain not in known:
            raise ConfigurationError(f"prismatic_remediation_rules[{index}].match.domain",
                                     f"no domain {domain!r} in the tree; declared: {', '.join(known) or 'none'}")
