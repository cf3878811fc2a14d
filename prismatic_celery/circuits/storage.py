"""A pybreaker storage on our :class:`~prismatic_celery.store.Store`, shared by every process.

One hash per breaker, ``prismatic:{<ns>}:circuit:<name>`` (``redis-cli HGETALL`` reads it):
``state``, ``fail_counter``, ``success_counter``, ``opened_at_ms``, ``open_until_ms``, ``seq``,
``changed_at_ms``, ``reason`` and one ``permit:<token>`` field per permit in flight (the
half-open trial), valued at its lease deadline in ms. Every operation is one atomic script
(``scripts/circuit.lua`` on Redis, :func:`.script.transition` in memory) timed by the store's clock
(Redis ``TIME``), so no read-modify-write spans two round trips and no host's clock matters.
Each change of the record is published, in the same script, as JSON on the channel
``prismatic:{<ns>}:circuit-events`` (``redis-cli SUBSCRIBE`` shows them).

Unlike pybreaker's ``CircuitRedisStorage``: the threshold check happens in the same script as
the increment, keys are namespaced per app and breaker, there is no per-process lock to
rely on, and at most one trial permit exists cluster-wide.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pybreaker

from ..log import RateLimitedWarning
from ..store import Store
from ..store.base import Scalar
from ..store.keys import Keys
from .config import CircuitSpec
from .record import CircuitRecord, Outcome, parse_reply
from .script import SCRIPT, ran_on_twin

__all__ = ["CircuitStorage"]


class CircuitStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage for one named breaker, backed by a :class:`Store`.

    The compound operations (:meth:`apply` with ``acquire``, ``success``, ``failure``, ``force``)
    are what :class:`~prismatic_celery.circuits.breaker.SharedBreaker` uses. The classic pybreaker
    accessors below also work (each one atomic), so this storage can be given to a plain
    ``pybreaker.CircuitBreaker``, but only the shared breaker makes "count and trip" and "become
    the trial" single atomic steps.
    """

    def __init__(self, store: Store, keys: Keys, name: str, *, spec: CircuitSpec | None = None,
                 channel: str | None = None) -> None:
        super().__init__("prismatic")
        self.store = store
        self.circuit = name
        self.spec = spec or CircuitSpec()
        self.key = keys.key("circuit", name)
        self.channel = channel or ""
        self._corrupt = RateLimitedWarning()

    def apply(self, op: str, spec: CircuitSpec | None = None, *, token: str = "", amount_ms: int = 0,
              target: str = "", reason: str = "") -> Outcome:
        """Run one atomic operation of ``circuit.lua`` and parse its reply.

        ``Outcome.shared`` is False when the store could not run it (a :class:`RedisStore` whose
        server is unreachable answers from its in-process fallback): the reply then says nothing
        about the shared record.
        """
        s = spec or self.spec
        args = self.arguments(op, s, token=token, amount_ms=amount_ms, target=target, reason=reason)
        reply, ran_on = ran_on_twin(lambda: self.store.run(SCRIPT, [self.key], args))
        outcome = parse_reply(self.circuit, reply)
        if outcome.corrupt:
            self._corrupt.warn("circuit-corrupt-record", key=self.key, action="read as closed, rewritten on change")
        if ran_on is not None and ran_on is not self.store:
            return replace(outcome, shared=False)
        return outcome

    def arguments(self, op: str, spec: CircuitSpec, *, token: str = "", amount_ms: int = 0, target: str = "",
                  reason: str = "") -> list[Scalar]:
        """``ARGV`` of ``circuit.lua`` for one operation."""
        return [
            op, self.channel, self.circuit, token, spec.fail_max, spec.reset_timeout_ms, spec.call_timeout_ms,
            spec.success_threshold, "1" if spec.strict else "0", int(amount_ms), target, reason,
        ]

    def read(self) -> CircuitRecord:
        """The current record (one round trip, no write)."""
        return self.apply("read").record

    # pybreaker's storage interface ---------------------------------------------------------
    @property
    def state(self) -> str:
        return self.read().state

    @state.setter
    def state(self, state: str) -> None:
        self.apply("force", target=state, amount_ms=self.spec.reset_timeout_ms)

    def increment_counter(self) -> None:
        self.apply("incr_fail")

    def reset_counter(self) -> None:
        self.apply("reset_fail")

    def increment_success_counter(self) -> None:
        self.apply("incr_success")

    def reset_success_counter(self) -> None:
        self.apply("reset_success")

    @property
    def counter(self) -> int:
        return self.read().fail_counter

    @property
    def success_counter(self) -> int:
        return self.read().success_counter

    @property
    def opened_at(self) -> datetime | None:
        ms = self.read().opened_at_ms
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self.apply("stamp", amount_ms=int(value.timestamp() * 1000))
