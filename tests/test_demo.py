"""`make demo` works from the README: with a real Redis and with the embedded fallback.

Both runs are one test: they start together (two subprocesses, one with Redis and a prefork worker, one on the
embedded broker and store), so the suite waits for the longer of the two, not for both in turn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("1. steady state", "2. dependency outage", "4. a bad deploy", "5. memory hog", "6. load spike",
         "7. the same failures again", "8. knowledge")


def _start(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PRISMATIC_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "examples.prismatic_platform.demo"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


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
def test_the_demo_runs_against_a_real_redis_and_falls_back_to_the_embedded_default(redis_url: str) -> None:
    """With Redis answering, the demo uses a real prefork worker and quarantines the poison message; without, it
    says so, runs every step on the embedded broker and store and reports knowledge; step 4's text and status
    agree in both."""
    real, embedded = _start(redis_url), _start(f"redis://127.0.0.1:{free_port()}/0")
    (code, out, err), (embedded_code, embedded_out, embedded_err) = _finish(real), _finish(embedded)

    assert code == 0, out[-3000:] + err[-3000:]
    assert f"using Redis at {redis_url}" in out
    assert "quarantined after 3 deliveries" in out
    assert float(out.rsplit("demo finished in ", 1)[1].split("s")[0]) < 120
    _step_four_agrees_with_its_status(out)

    assert embedded_code == 0, embedded_out[-3000:] + embedded_err[-3000:]
    assert "using the embedded default" in embedded_out
    for step in STEPS:
        assert step in embedded_out, step
    assert "auto_remediated_pct" in embedded_out and "demo finished in" in embedded_out
    _step_four_agrees_with_its_status(embedded_out)
