"""The remediation ladder and a lesson's choice: next candidate on failure, best by rate then speed,
bounded exploration, demotion that expires; time and chance are injected."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from prismatic_celery.lessons import LessonStore
from prismatic_celery.lessons.ladder import (
    ChoicePolicy,
    candidates,
    choose,
    explain,
    ladder,
    patient_retry,
    quick_retry,
    standing,
)
from prismatic_celery.lessons.store import Lesson, RemediationStats
from prismatic_celery.remediation.actions import (
    CircuitBreak,
    Escalate,
    RecycleProcess,
    RestartChild,
    RetryWithBackoff,
)
from prismatic_celery.store import Store
from prismatic_celery.store.keys import Keys

BACKOFF = RetryWithBackoff(initial_ms=1000, max_ms=30_000, jitter_ms=1000)
QUICK = quick_retry(BACKOFF)
PATIENT = patient_retry(BACKOFF)
RECYCLE = RecycleProcess()
POLICY = ChoicePolicy(min_observations=3, min_success_rate=0.8, max_consecutive_failures=2, exploration=0.1,
                      demotion_s=600.0)
NOW = 1_000_000.0
FP = "fp-ladder"


class Dice(random.Random):
    """A random source whose next draws are given."""

    def __init__(self, *draws: float) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.99


def with_stats(stats: dict[str, RemediationStats]) -> Lesson:
    return Lesson(FP, "external_dependency", "ConnectionError", "m", "r", NOW, NOW, 10, remediations=stats)


def stats_of(known: Lesson) -> dict[str, RemediationStats]:
    return dict(known.remediations)


def pick(options: tuple[object, ...], known: Lesson | None, tried: tuple[str, ...] = (), *, now: float = NOW,
         rng: random.Random | None = None) -> tuple[str, str] | None:
    choice = choose(options, known, tried=tried, policy=POLICY, now=now, rng=rng or Dice())  # type: ignore[arg-type]
    return None if choice is None else (choice.action.label, choice.reason)


# the ladder -----------------------------------------------------------------------------------
def test_each_failure_class_has_its_ladder_and_logic_errors_have_none() -> None:
    """State corruption recycles first; a dependency is retried with backoff, then its circuit is opened (only
    when the task declares one), then the process recycled, then a patient retry, and a quick retry comes last
    (found by exploration); a bug gets no re-run."""
    assert ladder("state_corruption", backoff=BACKOFF) == (RECYCLE, BACKOFF, QUICK)
    assert ladder("external_dependency", backoff=BACKOFF) == (BACKOFF, RECYCLE, PATIENT, QUICK)
    assert ladder("external_dependency", backoff=BACKOFF, circuits=("payments",), circuit_ms=5000) == (
        BACKOFF, CircuitBreak(target="payments", duration_ms=5000), RECYCLE, PATIENT, QUICK)
    assert ladder("resource_exhaustion", backoff=BACKOFF) == (RECYCLE, BACKOFF, PATIENT)
    assert ladder("logic_error", backoff=BACKOFF) == ()


def test_a_built_in_rules_action_comes_first_and_each_label_once() -> None:
    """The rule that matched is the first candidate; an action that ends the message is not a candidate."""
    assert candidates(BACKOFF, "external_dependency", backoff=BACKOFF) == (BACKOFF, RECYCLE, PATIENT, QUICK)
    assert candidates(RestartChild(), "external_dependency", backoff=BACKOFF)[0] == RestartChild()
    assert candidates(Escalate("disk_full"), "resource_exhaustion", backoff=BACKOFF) == (RECYCLE, BACKOFF, PATIENT)
    assert candidates(None, "logic_error", backoff=BACKOFF) == ()
    assert QUICK.label == "retry_with_backoff(100,30000,100)" and QUICK != BACKOFF


def test_the_patient_retry_waits_four_times_the_default_backoff_within_its_largest_delay() -> None:
    """For a dependency out of capacity: the default schedule, its first delay and jitter four times longer."""
    assert PATIENT.label == "retry_with_backoff(4000,30000,4000)" and PATIENT.max_ms == BACKOFF.max_ms
    short = RetryWithBackoff(initial_ms=1000, max_ms=2000, jitter_ms=0)
    assert patient_retry(short) == RetryWithBackoff(initial_ms=2000, max_ms=2000, jitter_ms=0)


# the choice -----------------------------------------------------------------------------------
OPTIONS = (BACKOFF, QUICK, RECYCLE)


def test_without_outcomes_the_first_candidate_is_tried() -> None:
    assert pick(OPTIONS, None) == (BACKOFF.label, "ladder")
    assert pick((), None) is None


def test_a_message_whose_remediation_failed_gets_the_next_candidate() -> None:
    """Each re-run of one message climbs the ladder: what failed on this message is not tried again."""
    assert pick(OPTIONS, None, tried=(BACKOFF.label,)) == (QUICK.label, "ladder")
    assert pick(OPTIONS, None, tried=(BACKOFF.label, QUICK.label)) == (RECYCLE.label, "ladder")
    assert pick(OPTIONS, None, tried=(BACKOFF.label, QUICK.label, RECYCLE.label)) == (BACKOFF.label, "ladder")


def test_a_candidate_that_failed_twice_in_a_row_is_demoted_for_every_message() -> None:
    """When an action fails for a fingerprint, the next crash of any message tries the next candidate."""
    failing = with_stats({BACKOFF.label: RemediationStats(tried=2, failed=2, consecutive_failures=2,
                                                          last_failed=NOW - 1)})
    assert standing(failing.remediations[BACKOFF.label], POLICY, NOW) == "demoted"
    assert pick(OPTIONS, failing) == (QUICK.label, "ladder")


def test_the_best_recovery_rate_wins_then_the_fastest_recovery() -> None:
    stats = {
        BACKOFF.label: RemediationStats(tried=4, succeeded=4, recovery_ms=4 * 1500),
        QUICK.label: RemediationStats(tried=4, succeeded=4, recovery_ms=4 * 200),
        RECYCLE.label: RemediationStats(tried=5, succeeded=4, failed=1, recovery_ms=4 * 100, last_failed=NOW - 5),
    }
    assert pick(OPTIONS, with_stats(stats)) == (QUICK.label, "best")  # 100% at 0.2 s beats 100% at 1.5 s and 80%


def test_a_proven_best_is_kept_and_a_message_it_failed_on_gets_the_next() -> None:
    stats = {RECYCLE.label: RemediationStats(tried=5, succeeded=5, recovery_ms=5 * 300)}
    known = with_stats(stats)
    assert pick(OPTIONS, known) == (RECYCLE.label, "best")
    assert pick(OPTIONS, known, tried=(BACKOFF.label,)) == (RECYCLE.label, "best")
    assert pick(OPTIONS, known, tried=(RECYCLE.label,)) == (BACKOFF.label, "next")


def test_exploration_is_bounded_to_first_crashes_and_its_probability() -> None:
    """With a proven best, a first crash tries an unproven candidate only when the dice say so (10 %), a
    re-run never does, and an exploration rate of 0 never explores."""
    known = with_stats({RECYCLE.label: RemediationStats(tried=5, succeeded=5, recovery_ms=1500)})
    assert pick(OPTIONS, known, rng=Dice(0.05)) == (BACKOFF.label, "explore")
    tried_quick = with_stats({**stats_of(known), QUICK.label: RemediationStats(tried=1, succeeded=1)})
    assert pick(OPTIONS, tried_quick, rng=Dice(0.05)) == (BACKOFF.label, "explore"), "the least tried first"
    tried_both = with_stats({**stats_of(known), QUICK.label: RemediationStats(tried=1, succeeded=1),
                             BACKOFF.label: RemediationStats(tried=2, succeeded=2)})
    assert pick(OPTIONS, tried_both, rng=Dice(0.05)) == (QUICK.label, "explore")
    settled = with_stats({**stats_of(known), QUICK.label: RemediationStats(tried=3, succeeded=3, recovery_ms=9000),
                          BACKOFF.label: RemediationStats(tried=2, failed=2, consecutive_failures=2, last_failed=NOW)})
    assert pick(OPTIONS, settled, rng=Dice(0.0)) == (RECYCLE.label, "best"), "nothing left to explore: bounded"
    assert pick(OPTIONS, known, rng=Dice(0.5)) == (RECYCLE.label, "best")
    assert pick(OPTIONS, known, tried=(QUICK.label,), rng=Dice(0.0)) == (RECYCLE.label, "best")
    never = ChoicePolicy(exploration=0.0)
    choice = choose(OPTIONS, known, tried=(), policy=never, now=NOW, rng=Dice(0.0))
    assert choice is not None and choice.reason == "best"
    rng = random.Random(7)
    explored = sum(choose(OPTIONS, known, tried=(), policy=POLICY, now=NOW, rng=rng).reason == "explore"  # type: ignore[union-attr]
                   for _ in range(2000))
    assert 120 <= explored <= 280  # about 10 % of 2000


def test_demotion_expires_with_the_clock_and_the_action_may_be_tried_again() -> None:
    """A falling rate demotes the best; after demotion_s since its last failure it is a trial again."""
    stats = {RECYCLE.label: RemediationStats(tried=10, succeeded=6, failed=4, consecutive_failures=1,
                                             recovery_ms=6 * 300, last_failed=NOW)}
    known = with_stats(stats)
    assert standing(stats[RECYCLE.label], POLICY, NOW + 1) == "demoted"  # 60 % < 80 %
    assert pick((RECYCLE, BACKOFF), known, now=NOW + 1) == (BACKOFF.label, "ladder")
    assert pick((RECYCLE,), known, now=NOW + 599) == (RECYCLE.label, "fallback")  # all demoted: the best record
    never = with_stats({RECYCLE.label: RemediationStats(tried=2, failed=2, consecutive_failures=2, last_failed=NOW)})
    assert pick((RECYCLE,), never, now=NOW + 1) is None  # all demoted and none ever worked: the rules decide
    assert standing(stats[RECYCLE.label], POLICY, NOW + 600) == "trial"
    assert pick((RECYCLE, BACKOFF), known, now=NOW + 600) == (RECYCLE.label, "ladder")


def test_explain_names_the_preferred_remediation_and_why() -> None:
    stats = {QUICK.label: RemediationStats(tried=3, succeeded=3, recovery_ms=600),
             BACKOFF.label: RemediationStats(tried=2, failed=2, consecutive_failures=2, last_failed=NOW)}
    why = explain(with_stats(stats), POLICY, NOW)
    assert why["preferred"] == QUICK.label and "100%" in why["reason"]
    rows = {r["remediation"]: r for r in why["remediations"]}
    assert rows[BACKOFF.label]["standing"] == "demoted" and rows[BACKOFF.label]["demoted_until"] == NOW + 600
    assert rows[QUICK.label]["mean_recovery_s"] == 0.2
    taught = Lesson(FP, "logic_error", "E", "m", "r", NOW, NOW, 1, taught='{"action":"dead_letter"}')
    assert explain(taught, POLICY, NOW)["preferred"] == '{"action":"dead_letter"}'


# outcomes and teaching in the store (Lua and its Python twin) -----------------------------------
@pytest.fixture
def lessons(store: Store, namespace: str) -> Iterator[LessonStore]:
    yield LessonStore(store, Keys(namespace))


def test_outcomes_keep_recovery_time_and_last_failure(lessons: LessonStore) -> None:
    lessons.record_crash(FP, task="t", failure_class="external_dependency", exc_type="E", message="m", when=NOW)
    lessons.record_outcome(FP, QUICK.label, True, recovery_s=0.25)
    lessons.record_outcome(FP, QUICK.label, True, recovery_s=0.35)
    stored = lessons.record_outcome(FP, BACKOFF.label, False, when=NOW + 5)
    assert stored is not None
    quick = stored.remediations[QUICK.label]
    assert (quick.succeeded, quick.recovery_ms, quick.mean_recovery_s) == (2, 600, 0.3)
    backoff = stored.remediations[BACKOFF.label]
    assert (backoff.failed, backoff.consecutive_failures, backoff.last_failed) == (1, 1, NOW + 5)


def test_teach_pins_a_validated_action_and_clear_forgets_it(lessons: LessonStore) -> None:
    assert lessons.teach(FP, RECYCLE.to_json()) is None  # no lesson yet: nothing to teach
    lessons.record_crash(FP, task="t", failure_class="state_corruption", exc_type="E", message="m", when=NOW)
    taught = lessons.teach(FP, CircuitBreak(target="payments", duration_ms=5000).to_json())
    assert taught is not None and '"circuit_break"' in taught.taught
    again = lessons.record_crash(FP, task="t", failure_class="state_corruption", exc_type="E", message="m", when=NOW)
    assert again.taught == taught.taught  # a crash keeps what was taught
    cleared = lessons.teach(FP, None)
    assert cleared is not None and cleared.taught == ""


def test_a_version_1_lesson_is_read_with_empty_new_fields() -> None:
    """Lessons written before outcomes kept recovery times are still valid."""
    data = {"count": 2, "domains": [], "exc_type": "E", "failure_class": "logic_error", "fingerprint": FP,
            "first_seen": 1.0, "last_seen": 2.0, "message": "m", "root_cause": "r", "tasks": [], "version": 1,
            "remediations": {"recycle_process": {"tried": 1, "succeeded": 1, "failed": 0, "consecutive_failures": 0}}}
    old = Lesson.from_json(data)
    assert old.taught == "" and old.remediations["recycle_process"].recovery_ms == 0
    assert old.to_json()["version"] == 2
