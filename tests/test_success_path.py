"""The success path's cost in the plugin's code, counted in bytecode instructions (deterministic, unlike CPU
seconds): ``benchmarks/success_path.py`` runs, and the plugin's extra stays under a ratchet.

The ratchets sit about 15% above what the code costs today (pool 546, main 252 instructions per task); a change
that makes a task that just works cost more must lower them back or raise them here, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import pythonpath

ROOT = Path(__file__).resolve().parent.parent
#: The plugin's extra bytecode instructions per task that just works, in a pool process and in the main process.
POOL_EXTRA_MAX = 560
MAIN_EXTRA_MAX = 180


@pytest.fixture(scope="module")
def figures() -> dict[str, int]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.success_path"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": pythonpath()})
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_plugin_adds_work_on_both_paths_and_plain_celery_counts_the_same_in_each_variant(
        figures: dict[str, int]) -> None:
    assert figures["pool_plugin"] > figures["pool_plain"] > 0
    assert figures["main_plugin"] > figures["main_plain"] > 0
    assert figures["pool_extra"] == figures["pool_plugin"] - figures["pool_plain"]
    assert figures["main_extra"] == figures["main_plugin"] - figures["main_plain"]


def test_a_task_that_just_works_costs_the_plugin_few_instructions_in_its_pool_process(
        figures: dict[str, int]) -> None:
    assert figures["pool_extra"] <= POOL_EXTRA_MAX, figures


def test_admitting_and_accepting_a_message_costs_the_plugin_few_instructions_in_the_main_process(
        figures: dict[str, int]) -> None:
    assert figures["main_extra"] <= MAIN_EXTRA_MAX, figures
