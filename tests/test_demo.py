"""`make demo` works from the README: with a real Redis and with the embedded fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def _demo(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRISMATIC_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "examples.prismatic_platform.demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_demo_falls_back_to_the_embedded_default_and_heals() -> None:
    """Without Redis the demo says so, runs every step on the embedded broker and store, and reports knowledge."""
    done = _demo(f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "using the embedded default" in out
    for step in ("1. steady state", "2. dependency outage", "4. a bad deploy", "5. memory hog",
                 "6. load spike", "7. the same failures again", "8. knowledge"):
        assert step in out, step
    assert "auto_remediated_pct" in out and "demo finished in" in out


@pytest.mark.integration
def test_the_demo_runs_against_a_real_redis(redis_url: str) -> None:
    """With Redis answering, the demo uses a real prefork worker and quarantines the poison message."""
    done = _demo(redis_url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"using Redis at {redis_url}" in done.stdout
    assert "quarantined after 3 deliveries" in done.stdout
    seconds = float(done.stdout.rsplit("demo finished in ", 1)[1].split("s")[0])
    assert seconds < 120
