"""The remediation ladder: the remediations a failure may get, and the one its lesson chooses.

**Candidates** of a crash, in order: the action of the built-in rule that matched it (when that
action re-runs the message), then its failure class's ladder:

| Failure class | Ladder |
|---|---|
| ``state_corruption`` | ``recycle_process``, retry with the default backoff, quick retry |
| ``external_dependency`` | retry with the default backoff, ``circuit_break`` of the task's first |
| | circuit (when the task declares ``circuits=[...]``), ``recycle_process``, patient retry, quick retry |
| ``resource_exhaustion`` | ``recycle_process``, retry with the default backoff, patient retry |
| ``logic_error`` | none: the message is dead-lettered (a re-run cannot fix a bug) |

A quick retry is ``retry_with_backoff`` starting at :data:`QUICK_INITIAL_MS`; it comes last, to be
found by exploration where it recovers as well and sooner. A patient retry is the default backoff
with its first delay and jitter :data:`PATIENT_FACTOR` times longer: for a dependency that is
overloaded or out of capacity, where a re-run a second later meets the same overload (its
recovery rate then beats the faster candidates', and rate ranks first). Candidates are told apart by their
label (the action's name and parameters). Whatever remediation a lesson chose, the engine never
re-runs a message that already failed again sooner than the default backoff for that attempt. A
user rule pins its action, and a built-in rule that does not re-run (``escalate("disk_full")``)
is followed as it is: neither reaches this module.

**Choice** (:func:`choose`), for one crash of a fingerprint, from the outcomes its lesson holds
per candidate (each outcome is one attempt: did the re-run this remediation gave succeed, and how
long after the crash):

1. an action an operator taught for the fingerprint wins (the engine checks it first);
2. a candidate *qualifies* with at least ``min_observations`` outcomes, a recovery rate of at
   least ``min_success_rate`` and fewer than ``max_consecutive_failures`` failures in a row; the
   best qualifying candidate is chosen: highest recovery rate, then fastest mean recovery;
3. on a message's first crash, with probability ``exploration``, the least tried candidate that
   is neither qualified nor demoted is tried instead, so a better (for example faster)
   remediation can still be found; a message that already crashed is never explored on. This is
   bounded: a candidate leaves exploration once it has ``min_observations`` outcomes (it then
   qualifies or is demoted), and a demoted one comes back for one trial per ``demotion_s``;
4. a candidate is *demoted* for ``demotion_s`` after its last failure when its failures in a row
   reach ``max_consecutive_failures`` or its rate falls below ``min_success_rate``; then it may
   be tried again;
5. without a qualifying candidate the ladder is walked: the first candidate that is not demoted
   and has not failed on this message yet;
6. when the best already failed on this message, the next candidate (best-ranked first) is
   tried; when every candidate is demoted, the one with the best record is applied if it ever
   recovered a crash (``fallback``), else :func:`choose` returns None and the rules decide.
"""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from ..remediation.actions import Action, CircuitBreak, RecycleProcess, RestartChild, RetryWithBackoff
from .classify import EXTERNAL_DEPENDENCY, RESOURCE_EXHAUSTION, STATE_CORRUPTION
from .records import Lesson, RemediationStats

__all__ = [
    "CIRCUIT_OPEN_MS",
    "PATIENT_FACTOR",
    "QUICK_INITIAL_MS",
    "Choice",
    "ChoicePolicy",
    "Explanation",
    "StandingRow",
    "candidates",
    "choose",
    "explain",
    "knows",
    "ladder",
    "patient_retry",
    "process_random",
    "quick_retry",
    "standing",
]

#: First delay of the quick retry candidate (milliseconds); its jitter is the same.
QUICK_INITIAL_MS = 100
#: How many times longer the patient retry candidate's first delay and jitter are than the default backoff's.
PATIENT_FACTOR = 4
#: How long the ``circuit_break`` candidate opens a circuit whose reset timeout is unknown (milliseconds).
CIRCUIT_OPEN_MS = 30_000
# Actions that run the message again (the others end it).
RERUN_ACTIONS = frozenset(cls.name for cls in (RetryWithBackoff, RestartChild, RecycleProcess, CircuitBreak))


def process_random() -> random.Random:
    """A random source reseeded in every forked child: pool processes forked from one parent must not all draw
    the same exploration choices and jitters."""
    rng = random.Random()
    ref = weakref.ref(rng)

    def reseed() -> None:
        alive = ref()
        if alive is not None:
            alive.seed()

    os.register_at_fork(after_in_child=reseed)
    return rng


def quick_retry(backoff: RetryWithBackoff) -> RetryWithBackoff:
    """The quick retry candidate: :data:`QUICK_INITIAL_MS` first, doubling up to ``backoff``'s largest delay."""
    return RetryWithBackoff(initial_ms=QUICK_INITIAL_MS, max_ms=max(QUICK_INITIAL_MS, backoff.max_ms),
                            jitter_ms=QUICK_INITIAL_MS)


def patient_retry(backoff: RetryWithBackoff) -> RetryWithBackoff:
    """The patient retry candidate: ``backoff`` with its first delay and jitter :data:`PATIENT_FACTOR` times longer."""
    initial = min(backoff.initial_ms * PATIENT_FACTOR, backoff.max_ms)
    return RetryWithBackoff(initial_ms=initial, max_ms=backoff.max_ms, jitter_ms=backoff.jitter_ms * PATIENT_FACTOR)


def ladder(failure_class: str, *, backoff: RetryWithBackoff, circuits: Sequence[str] = (),
           circuit_ms: int = CIRCUIT_OPEN_MS) -> tuple[Action, ...]:
    """The failure class's safe candidates, in the order they are tried (see the module docstring)."""
    quick = quick_retry(backoff)
    if failure_class == STATE_CORRUPTION:
        return (RecycleProcess(), backoff, quick)
    if failure_class == EXTERNAL_DEPENDENCY:
        circuit = (CircuitBreak(target=circuits[0], duration_ms=circuit_ms),) if circuits else ()
        return (backoff, *circuit, RecycleProcess(), patient_retry(backoff), quick)
    if failure_class == RESOURCE_EXHAUSTION:
        return (RecycleProcess(), backoff, patient_retry(backoff))
    return ()


def candidates(ruled: Action | None, failure_class: str, *, backoff: RetryWithBackoff,
               circuits: Sequence[str] = (), circuit_ms: int = CIRCUIT_OPEN_MS) -> tuple[Action, ...]:
    """``ruled`` (a built-in rule's action, when it re-runs the message) then the class's ladder, each label once."""
    first = (ruled,) if ruled is not None and ruled.name in RERUN_ACTIONS else ()
    seen: set[str] = set()
    out: list[Action] = []
    for action in (*first, *ladder(failure_class, backoff=backoff, circuits=circuits, circuit_ms=circuit_ms)):
        if action.label not in seen:
            seen.add(action.label)
            out.append(action)
    return tuple(out)


@dataclass(frozen=True)
class ChoicePolicy:
    """How a lesson weighs outcomes (settings ``prismatic_lesson_*``)."""

    min_observations: int = 3
    min_success_rate: float = 0.8
    max_consecutive_failures: int = 2
    exploration: float = 0.1
    demotion_s: float = 600.0


@dataclass(frozen=True)
class Choice:
    """The chosen remediation and why: ``best``, ``explore``, ``next``, ``ladder`` or ``fallback``."""

    action: Action
    reason: str


def standing(stats: RemediationStats | None, policy: ChoicePolicy, now: float) -> str:
    """``untested``, ``qualified``, ``demoted`` or ``trial`` (some outcomes, not enough to qualify or demote)."""
    if stats is None or stats.observations == 0:
        return "untested"
    if stats.qualifies(min_observations=policy.min_observations, min_success_rate=policy.min_success_rate,
                       max_consecutive_failures=policy.max_consecutive_failures):
        return "qualified"
    failing = stats.consecutive_failures >= policy.max_consecutive_failures or (
        stats.observations >= policy.min_observations and (stats.success_rate or 0.0) < policy.min_success_rate)
    if failing:
        return "demoted" if now - stats.last_failed < policy.demotion_s else "trial"
    return "trial"


def _observations(stats: RemediationStats | None) -> int:
    return stats.observations if stats is not None else 0


def knows(lesson: Lesson | None, policy: ChoicePolicy, now: float) -> bool:
    """Whether the lesson holds a remediation known to work: one an operator taught, or a qualified one."""
    if lesson is None:
        return False
    return bool(lesson.taught) or any(standing(stats, policy, now) == "qualified"
                                      for stats in lesson.remediations.values())


def _rank(stats: RemediationStats, index: int) -> tuple[float, float, int]:
    return (*stats.rank, index)


def choose(options: Sequence[Action], lesson: Lesson | None, *, tried: Sequence[str], policy: ChoicePolicy,
           now: float, rng: random.Random) -> Choice | None:
    """The remediation for one crash among ``options`` (see the module docstring); None when all are demoted.

    ``tried`` holds the labels already applied to this message; ``now`` is the store's clock in
    seconds since the epoch; ``rng`` decides exploration. None when every candidate is demoted and none ever
    recovered a crash: the rules decide.
    """
    remembered = lesson.remediations if lesson is not None else {}
    stands = {a.label: standing(remembered.get(a.label), policy, now) for a in options}
    open_ = [a for a in options if stands[a.label] != "demoted"]
    order = {a.label: i for i, a in enumerate(options)}
    if not open_:  # every candidate demoted: the one that recovered best, if any ever did; else the rules
        worked = [a for a in options if a.label in remembered and remembered[a.label].succeeded > 0]
        if not worked:
            return None
        return Choice(min(worked, key=lambda a: _rank(remembered[a.label], order[a.label])), "fallback")
    qualified = sorted((a for a in open_ if stands[a.label] == "qualified"),
                       key=lambda a: _rank(remembered[a.label], order[a.label]))
    fresh = [a for a in open_ if a.label not in tried]
    if not qualified:
        return Choice(fresh[0] if fresh else open_[0], "ladder")
    best = qualified[0]
    if not tried:
        trials = [a for a in open_ if stands[a.label] != "qualified"]
        if trials and policy.exploration > 0 and rng.random() < policy.exploration:
            least = min(trials, key=lambda a: (_observations(remembered.get(a.label)), order[a.label]))
            return Choice(least, "explore")
        return Choice(best, "best")
    if best.label not in tried:
        return Choice(best, "best")
    following = [a for a in qualified if a.label not in tried] + [a for a in fresh if a not in qualified]
    return Choice(following[0], "next") if following else Choice(best, "best")


class StandingRow(TypedDict):
    """One remediation's record and standing in a lesson (a row of :func:`explain`)."""

    remediation: str
    standing: str
    tried: int
    succeeded: int
    failed: int
    recovery_rate: float | None
    mean_recovery_s: float | None
    consecutive_failures: int
    demoted_until: float | None


class Explanation(TypedDict):
    """:func:`explain`: the preferred remediation (or None), why, and every remediation's standing."""

    preferred: str | None
    reason: str
    remediations: list[StandingRow]


def explain(lesson: Lesson, policy: ChoicePolicy, now: float) -> Explanation:
    """Why a lesson chooses what it chooses, for operators: each remediation's standing and the preferred one.

    ``preferred`` is the taught action's JSON, else the best qualified remediation's label, else None
    (the ladder is walked); ``reason`` says which in words.
    """
    rows: list[StandingRow] = []
    stands = {label: standing(stats, policy, now) for label, stats in lesson.remediations.items()}
    for label, stats in sorted(lesson.remediations.items()):
        rate, mean = stats.success_rate, stats.mean_recovery_s
        rows.append({"remediation": label, "standing": stands[label], "tried": stats.tried,
                     "succeeded": stats.succeeded, "failed": stats.failed,
                     "recovery_rate": None if rate is None else round(rate, 4),
                     "mean_recovery_s": None if mean is None else round(mean, 3),
                     "consecutive_failures": stats.consecutive_failures,
                     "demoted_until": stats.last_failed + policy.demotion_s if stands[label] == "demoted" else None})
    qualified = sorted((label for label, stand in stands.items() if stand == "qualified"),
                       key=lambda label: (*lesson.remediations[label].rank, label))
    if lesson.taught:
        preferred, reason = lesson.taught, "taught by an operator (wins over every lesson; a user rule still pins)"
    elif qualified:
        preferred = qualified[0]
        best = lesson.remediations[preferred]
        reason = (f"best recovery rate {100 * (best.success_rate or 0):.0f}% over {best.observations}"
                  f" attempts, mean recovery {round(best.mean_recovery_s or 0.0, 3)} s; "
                  f"{100 * policy.exploration:.0f}% of first crashes try an unproven candidate")
    else:
        preferred, reason = None, (f"no remediation qualified yet ({policy.min_observations} outcomes at "
                                   f"{100 * policy.min_success_rate:.0f}%): the {lesson.failure_class} ladder is"
                                   " walked, skipping demoted remediations")
    return {"preferred": preferred, "reason": reason, "remediations": rows}
