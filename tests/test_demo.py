"""`make demo` works from the README: with a real Redis and with the embedded fallback.

Both runs start in the background together with two of the benchmarks' quick runs (tests/background.py,
tests/test_benchmarks.py): one with Redis (a leased database) and a prefork worker, one on the embedded broker
and store; the suite waits for the longest of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.background import Background, register
from tests.conftest import REDIS_HOST, REDIS_PORT, _require, free_port, leased_db, redis_answers

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/test_demo.py::test_the_demo_runs_against_a_real_redis_and_falls_back_to_the_embedded_default"
STEPS = ("1. steady state", "2. dependency outage", "4. a bad deploy", "5. memory hog", "6. load spike",
         "7. the same failures again", "8. knowledge")
URLS: dict[str, str] = {}


def _popen(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PRISMATIC_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "examples.prismatic_platform.demo"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_real(stack: ExitStack) -> subprocess.Popen[str] | None:
    if not redis_answers():
        return None
    URLS["real"] = stack.enter_context(leased_db(f"redis://{REDIS_HOST}:{REDIS_PORT}"))
    return _popen(URLS["real"])


def _start_embedded(_: ExitStack) -> subprocess.Popen[str]:
    URLS["embedded"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing answers there
    return _popen(URLS["embedded"])


register("demo-real", _start_real, TEST, phase=2)  # with the benchmarks' outage and overhead runs
register("demo-embedded", _start_embedded, TEST, phase=2)


def _step_four_agrees_with_its_status(out: str) -> None:
    """Step 4's closing sentence says what the status line above it shows."""
    step = out.split("=== 4.", 1)[1].split("=== 5.", 1)[0]
    status = [line for line in step.splitlines() if "] paused: " in line][-1]
    closing = [line for line in step.splitlines() if "failed by rate and restarted" in line][-1]
    if "paused: -" in status:
        assert "the status shows them running" in closing, step
    else:
        assert "paused again now" in closing, step


@pytest.mark.integration
@pytest.mark.timeout(200)
def test_the_demo_runs_against_a_real_redis_and_falls_back_to_the_embedded_default(background: Background) -> None:
    """With Redis answering, the demo uses a real prefork worker and quarantines the poison message; without, it
    says so, runs every step on the embedded broker and store and reports knowledge; step 4's text and status
    agree in both."""
    _require(background.started("demo-real"), f"no Redis answering at {REDIS_HOST}:{REDIS_PORT}")
    real, embedded = background.result("demo-real", 180), background.result("demo-embedded", 180)

    assert real.returncode == 0, real.stdout[-3000:] + real.stderr[-3000:]
    assert f"using Redis at {URLS['real']}" in real.stdout
    assert "quarantined after 3 deliveries" in real.stdout
    assert float(real.stdout.rsplit("demo finished in ", 1)[1].split("s")[0]) < 120
    _step_four_agrees_with_its_status(real.stdout)

    out = embedded.stdout
    assert embedded.returncode == 0, out[-3000:] + embedded.stderr[-3000:]
    assert "using the embedded default" in out
    for step in STEPS:
        assert step in out, step
    assert "auto_remediated_pct" in out and "demo finished in" in out
    _step_four_agrees_with_its_status(out)
