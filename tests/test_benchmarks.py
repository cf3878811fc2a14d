"""The benchmarks' quick runs end to end: each ends with its JSON summary, its correctness figures asserted (speed
is measured, not asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import pythonpath
from tests.background import Background, register
from tests.conftest import _require

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"overhead_ratio", "redis_cmds_per_task", "pairs", "tasks", "plain_tasks_per_s", "plugin_tasks_per_s",
        "cpu_ratio", "plain_cpu_s_per_task", "plugin_cpu_s_per_task", "crash_round_trips",
        "overhead_ratio_interval", "cpu_ratio_interval"}


#: The quick runs start in the background with the demo's runs (tests/background.py), in phases, each test
#: waiting for its own run: the suite waits for the longest run of each phase, not for every run in turn. Each
#: starts its own Redis servers and workers on free ports. The chaos run goes alone first (its SIGKILL and
#: pool-process deaths must not shift with a busy CPU); then outage, overhead, side by side, cluster, worker calls
#: and the demos together (overhead and side by side keep the CPU busy, but assert no speed); then learning alone
#: (its rounds need the CPU to meet each fault pattern in time).
QUICK_RUNS = {
    "benchmarks.chaos": ("test_chaos_benchmark_quick_run_settles_everything_with_the_plugin", 1),
    "benchmarks.outage": ("test_outage_benchmark_quick_run_loses_nothing_and_runs_nothing_twice_with_the_plugin", 2),
    "benchmarks.overhead": ("test_overhead_benchmark_quick_run_ends_with_its_json_summary", 2),
    "benchmarks.learning": ("test_learning_benchmark_quick_run_prints_each_round_and_the_seeds_five_figures", 3),
    "benchmarks.cluster": ("test_cluster_benchmark_quick_run_keeps_a_namespace_on_one_node", 2),
    "benchmarks.worker_calls": ("test_worker_calls_benchmark_quick_run_counts_the_plugins_calls_per_task", 2),
    "benchmarks.side_by_side": ("test_side_by_side_benchmark_quick_run_reads_both_workers_cpu_over_one_interval", 2),
}


def _starter(module: str) -> Any:
    def start(_: Any) -> subprocess.Popen[str] | None:
        if shutil.which("redis-server") is None:
            return None
        return subprocess.Popen([sys.executable, "-m", module, "--quick"], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": pythonpath()}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    return start


for _module, (_test, _phase) in QUICK_RUNS.items():
    register(_module, _starter(_module), f"tests/test_benchmarks.py::{_test}", phase=_phase)


def _quick(runs: Background, module: str, timeout_s: float) -> tuple[subprocess.CompletedProcess[str],
                                                                     dict[str, Any]]:
    """The quick run of ``module`` (it starts its own Redis servers and workers); its final JSON line."""
    _require(runs.started(module), "redis-server is not installed")
    proc = runs.result(module, timeout_s)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


OUTAGE_KEYS = {"calls_ratio", "lost", "duplicates", "drain_ratio", "plain_calls", "plugin_calls", "plain_drain_s",
               "plugin_drain_s", "plain_lost", "plain_duplicates"}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_outage_benchmark_quick_run_loses_nothing_and_runs_nothing_twice_with_the_plugin(
        background: Background) -> None:
    """`python -m benchmarks.outage --quick`: sane figures, and the plugin loses no task and runs none twice."""
    proc, summary = _quick(background, "benchmarks.outage", 140)
    assert set(summary) == OUTAGE_KEYS, summary
    assert summary["lost"] == 0 and summary["duplicates"] == 0, proc.stdout
    assert summary["plain_lost"] >= 0 and summary["plain_duplicates"] >= 0
    assert summary["plain_calls"] >= 40, "every plain task called the dead service at least once"
    assert 1 <= summary["plugin_calls"] < summary["plain_calls"], proc.stdout
    assert summary["calls_ratio"] == pytest.approx(summary["plain_calls"] / summary["plugin_calls"], rel=0.01)
    assert summary["plain_drain_s"] > 0 and summary["plugin_drain_s"] >= 0 and summary["drain_ratio"] >= 0
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0].strip() for line in lines if line.startswith(("plain :", "plugin:"))] == [
        "plain", "plugin"], proc.stdout


CHAOS_KEYS = {"mode", "lost", "lost_unreceived", "unsettled_at_cap", "healthy_p50_s", "healthy_p99_s",
              "dead_dependency_calls", "logic_error_executions_max", "logic_error_executions_total", "poison_runs",
              "poison_runs_at_kill", "duplicate_successes", "seconds", "messages", "settled", "dead_lettered_other",
              "max_countdown_s"}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_chaos_benchmark_quick_run_settles_everything_with_the_plugin(background: Background) -> None:
    """`python -m benchmarks.chaos --quick`: one JSON line per mode, plain then plugin; with the plugin every
    message a worker received settles, each logic error runs once and each poison message at most 3 times (more
    only for one that ran on the worker SIGKILLed under it)."""
    proc, plugin = _quick(background, "benchmarks.chaos", 160)
    plain = json.loads(proc.stdout.strip().splitlines()[-2])
    assert set(plain) == CHAOS_KEYS and set(plugin) == CHAOS_KEYS, proc.stdout
    assert (plain["mode"], plugin["mode"]) == ("plain", "plugin")
    assert plain["messages"] == plugin["messages"] > 0
    # A message kombu's Redis transport handed to the connection of the worker being SIGKILLed never reaches a
    # worker (lost_unreceived): no variant can recover it. Nothing else may stay unsettled or be lost.
    assert plugin["lost"] == plugin["unsettled_at_cap"] == plugin["lost_unreceived"], proc.stdout
    assert plugin["settled"] == plugin["messages"] - plugin["lost"] and plugin["dead_lettered_other"] == 0, proc.stdout
    # Each logic error runs once with the plugin; only one kombu handed to the SIGKILLed worker's connection (never
    # received, in either variant) may be missing from one run's total.
    logic, unreceived = plugin["logic_error_executions_total"], plugin["lost_unreceived"] + plain["lost_unreceived"]
    assert logic > 0 and plugin["logic_error_executions_max"] == 1, proc.stdout
    assert abs(plain["logic_error_executions_total"] - logic) <= unreceived, proc.stdout
    # A poison message that never ran on the worker SIGKILLed mid-run runs exactly as often as quarantine allows
    # (3). One that did: each run it started there before the kill may be a death no surviving worker saw, and the
    # delivery that worker held unacknowledged comes back after the visibility timeout (at-least-once, in either
    # variant), so up to k + 1 more runs (on a busy machine the kill often lands between them).
    runs, uncounted = plugin["poison_runs"], plugin["poison_runs_at_kill"]
    assert runs and all(r <= 3 + (k + 1 if k else 0) for r, k in zip(runs, uncounted, strict=True)), proc.stdout
    assert plain["unsettled_at_cap"] >= len(plain["poison_runs"]), "plain Celery never settles a poison message"
    # The outage happened (plain Celery kept calling the dead dependency) and the plugin called it less: 0 to 2
    # times in a quick run, 0 when its shared circuit opened on the first failures just before the outage began.
    assert 0 <= plugin["dead_dependency_calls"] < plain["dead_dependency_calls"], proc.stdout
    for summary in (plain, plugin):
        assert 0 < summary["healthy_p50_s"] <= summary["healthy_p99_s"] and summary["seconds"] > 0
    assert plugin["max_countdown_s"] < 8, "the plugin's countdowns stay below the quick run's visibility timeout"
    # With acks_late, a message the SIGKILLed worker had completed but not yet acknowledged runs again (Celery's
    # at-least-once, in either variant): at most one per pool process of that worker (-c 2). Nothing else twice.
    assert plugin["duplicate_successes"] <= 2, proc.stdout
    assert "targets: " in proc.stdout


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_overhead_benchmark_quick_run_ends_with_its_json_summary(background: Background) -> None:
    """`python -m benchmarks.overhead --quick` starts its own Redis servers and workers and prints sane figures."""
    proc, summary = _quick(background, "benchmarks.overhead", 170)
    assert set(summary) == KEYS, summary
    assert summary["overhead_ratio"] > 0
    assert summary["redis_cmds_per_task"] >= 0
    assert summary["plain_tasks_per_s"] > 0 and summary["plugin_tasks_per_s"] > 0
    assert summary["pairs"] >= 1 and summary["tasks"] > 0
    # CPU of each worker's whole process tree (measured, not asserted): a worker's start-up alone costs more than
    # 0.05 s, so a smaller figure would mean the accounting missed the worker; one pair, so the ratio is its own.
    for variant in ("plain", "plugin"):
        assert summary[f"{variant}_cpu_s_per_task"] * summary["tasks"] > 0.05, summary
    if summary["pairs"] == 1:
        assert summary["cpu_ratio"] == pytest.approx(
            summary["plugin_cpu_s_per_task"] / summary["plain_cpu_s_per_task"], rel=0.01), summary
    for name in ("overhead_ratio", "cpu_ratio"):  # rounded to 4 places each: equal at one pair
        low, high = summary[f"{name}_interval"]
        assert low <= summary[name] <= high, summary
    assert 1 <= summary["crash_round_trips"] <= 2, "a failure costs the lesson's round trip and one more"
    assert proc.stdout.count("plain  run") == summary["pairs"] and proc.stdout.count("plugin run") == summary["pairs"]
    assert all(" ms/task" in line for line in proc.stdout.splitlines() if line.startswith(("plain  run", "plugin run")))


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0], (1.0, 1.0)),
    ([3.0, 1.0, 2.0, 5.0, 4.0], (1.0, 5.0)),  # five values cannot give 95 %: the extremes
    ([6.0, 1.0, 5.0, 2.0, 4.0, 3.0], (1.0, 6.0)),  # six: the extremes cover 96.9 % (the 2nd and 5th: 78 %)
    ([float(x) for x in range(9, 0, -1)], (2.0, 8.0)),  # nine: the 2nd and the 8th (96.1 %)
    ([float(x) for x in range(15, 0, -1)], (4.0, 12.0)),  # fifteen pairs: the 4th and the 12th (96.5 %)
    ([float(x) for x in range(1, 17)], (4.0, 13.0)),  # sixteen: the 4th and the 13th (97.9 %; the 5th: 92.3 %)
])
def test_overhead_median_interval_takes_the_order_statistics_that_cover_95_percent(
        values: list[float], expected: tuple[float, float]) -> None:
    """The interval the overhead benchmark prints around each median ratio is the binomial one, from any order."""
    from benchmarks.overhead import median_interval

    assert median_interval(values) == expected


@pytest.mark.parametrize("pairs", [1, 2, 7, 25])
def test_overhead_pair_orders_are_balanced_shuffled_and_reproducible(pairs: int) -> None:
    """Half the pairs run plain first (one more for an odd count), the orders are shuffled by the seed, and the
    same seed gives the same orders."""
    from benchmarks.overhead import PAIR_ORDERS, pair_orders

    orders = pair_orders(pairs, seed=1)
    assert len(orders) == pairs and set(orders) <= set(PAIR_ORDERS)
    assert orders.count(("plain", "plugin")) == (pairs + 1) // 2
    assert orders == pair_orders(pairs, seed=1)
    if pairs == 25:
        shuffled = {tuple(pair_orders(pairs, seed)) for seed in range(5)}
        assert len(shuffled) > 1 and tuple(PAIR_ORDERS[i % 2] for i in range(pairs)) not in shuffled


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_worker_calls_benchmark_quick_run_counts_the_plugins_calls_per_task(background: Background) -> None:
    """`python -m benchmarks.worker_calls --quick` counts every call of real workers' processes: the plugin's pool
    processes make more calls per task than plain Celery's (its task path: the slot, the pipeline, the counts)."""
    proc, summary = _quick(background, "benchmarks.worker_calls", 240)
    assert set(summary) == {"main_plain", "main_plugin", "pool_plain", "pool_plugin", "tasks"}, summary
    assert summary["tasks"] == 200
    # a pool process receives, runs and answers each task: hundreds of calls (267 plain on the project's machine)
    assert 100 < summary["pool_plain"] < summary["pool_plugin"], summary
    assert summary["main_plain"] > summary["pool_plain"], "the main process consumes, dispatches and settles each"
    assert proc.stdout.count(" tasks: main ") == 4, proc.stdout


LEARNING_KEYS = {"total_lessons", "auto_remediated_pct", "mean_time_to_recovery_s", "escalation_rate",
                 "false_positive_rate", "attempts_per_recovery", "attempts_trend_per_round", "rounds", "seed",
                 "overall"}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_learning_benchmark_quick_run_prints_each_round_and_the_seeds_five_figures(
        background: Background) -> None:
    """`python -m benchmarks.learning --quick`: a line per round, then one JSON line; each pattern that crashed
    became one lesson (hosts, ids and generations do not split them; a stale-process pattern may not crash at all
    in a quick run when other patterns recycled every process first), the bug was never re-run (escalated once),
    and remediations kept most known-pattern crashes from failing."""
    proc, report = _quick(background, "benchmarks.learning", 220)
    assert set(report) == LEARNING_KEYS, proc.stdout
    lines = proc.stdout.splitlines()[:-1]
    assert [line.split(":")[0] for line in lines if line.startswith("round")] == [f"round {i}" for i in (1, 2, 3)]
    kinds = [line.split()[1] for line in lines if line.startswith("lesson ")]
    assert len(kinds) == len(set(kinds)) == report["total_lessons"], proc.stdout  # one lesson per exception
    assert 6 <= report["total_lessons"] <= 7 and "KeyError" in kinds and "RuntimeError" in kinds, proc.stdout
    assert report["escalation_rate"] is not None and 0 < report["escalation_rate"] < 0.1, proc.stdout
    assert report["auto_remediated_pct"] is not None and report["auto_remediated_pct"] >= 60, proc.stdout
    assert report["false_positive_rate"] is not None and report["false_positive_rate"] <= 0.1, proc.stdout
    assert report["overall"]["recovery_rate_by_action"].get("recycle_process", 0) > 0, proc.stdout


CLUSTER_KEYS = {"decisions_per_s", "processes", "seconds", "decisions", "scripts_per_decision",
                "shard_cpu_ms_per_decision", "shard_ceiling_per_s", "other_nodes_calls"}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_cluster_benchmark_quick_run_keeps_a_namespace_on_one_node(background: Background) -> None:
    """`python -m benchmarks.cluster --quick` starts its own 3-master cluster; every call of the namespace's crash
    decisions lands on one node (the others get none)."""
    _require(shutil.which("redis-cli") is not None, "redis-cli is not installed")
    proc, summary = _quick(background, "benchmarks.cluster", 110)
    assert set(summary) == CLUSTER_KEYS, summary
    assert summary["decisions"] > 0 and summary["decisions_per_s"] > 0 and summary["shard_ceiling_per_s"] > 0
    assert summary["other_nodes_calls"] == 0, proc.stdout
    assert 2 <= summary["scripts_per_decision"] <= 6, "the lesson, the restart decision and its companions"
    assert "degraded" not in proc.stdout


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_side_by_side_benchmark_quick_run_reads_both_workers_cpu_over_one_interval(background: Background) -> None:
    """`python -m benchmarks.side_by_side --quick`: both workers ran at once and each took messages in the
    measured interval; the ratio is the per-task figures' (speed is measured, not asserted)."""
    proc, summary = _quick(background, "benchmarks.side_by_side", 240)
    assert set(summary) == {"cpu_ratio", "cpu_ratio_interval", "main_cpu_ratio", "pool_cpu_ratio", "rounds", "tasks",
                            "plain_cpu_s_per_task", "plugin_cpu_s_per_task"}, summary
    assert summary["main_cpu_ratio"] > 0 and summary["pool_cpu_ratio"] > 0, proc.stdout
    assert (summary["rounds"], summary["tasks"]) == (1, 2000)
    assert summary["plain_cpu_s_per_task"] > 0 and summary["plugin_cpu_s_per_task"] > 0, proc.stdout
    assert summary["cpu_ratio"] == pytest.approx(
        summary["plugin_cpu_s_per_task"] / summary["plain_cpu_s_per_task"], rel=0.01)
    assert summary["cpu_ratio_interval"] == [summary["cpu_ratio"]] * 2, "one round: the interval is its ratio"
    assert proc.stdout.count("round  1: plain ") == 1, proc.stdout
    assert "main process " in proc.stdout and "pool processes " in proc.stdout, proc.stdout
