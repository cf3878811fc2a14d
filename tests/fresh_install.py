"""`make fresh-install`: a fresh virtualenv with only `pip install .` runs a Redis-broker worker.

Not part of the pytest suite (building a virtualenv and installing into it takes about a minute); `.ci/run`
runs it after `make test`. It builds a virtualenv in a temporary directory, installs the project into it
with nothing else, writes a tiny app that enables the plugin on a Redis broker (a leased database of the
Redis on 127.0.0.1:6379, as the tests use), starts `celery worker` from that virtualenv, sends a task from
it, and checks the worker ran it supervised. Exit 0 when it did, 1 otherwise (with the worker's log).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tests.conftest import REDIS_HOST, REDIS_PORT, leased_db, redis_answers

ROOT = Path(__file__).resolve().parents[1]

APP = textwrap.dedent("""\
    import os
    from celery import Celery
    import prismatic_celery

    app = Celery("fresh", broker=os.environ["FRESH_BROKER"], backend=os.environ["FRESH_BROKER"])
    app.conf.prismatic_domains = {"core": {"children": ["storage"]}}
    app.conf.prismatic_namespace = "fresh"
    prismatic_celery.install(app)


    @app.task(name="fresh.add")
    def add(x, y):
        return x + y
""")

PRODUCER = textwrap.dedent("""\
    from fresh import app
    result = app.tasks["fresh.add"].apply_async((2, 3), queue="storage")
    print("result", result.get(timeout=60))
""")


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("fresh-install:", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def main() -> int:
    if not redis_answers():
        print(f"fresh-install: no Redis answers on {REDIS_HOST}:{REDIS_PORT}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="prismatic-fresh-") as tmp, \
            leased_db(f"redis://{REDIS_HOST}:{REDIS_PORT}") as broker:
        venv = Path(tmp) / "venv"
        _run([sys.executable, "-m", "venv", str(venv)])
        bin_dir = venv / "bin"
        _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(ROOT)])
        app_dir = Path(tmp) / "app"
        app_dir.mkdir()
        (app_dir / "fresh.py").write_text(APP)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(FRESH_BROKER=broker, PATH=f"{bin_dir}:{env.get('PATH', '')}")
        log_path = Path(tmp) / "worker.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen(
                [str(bin_dir / "celery"), "-A", "fresh", "worker", "-P", "solo", "-n", "fresh@localhost",
                 "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                produced = subprocess.run([str(bin_dir / "python"), "-c", PRODUCER], cwd=app_dir, env=env,
                                          text=True, capture_output=True, timeout=120)
            finally:
                worker.terminate()
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(5)
        output = log_path.read_text()
        started = time.strftime("%H:%M:%S")
        if produced.returncode != 0 or "result 5" not in produced.stdout or "fresh.add" not in output:
            print(f"fresh-install: FAILED at {started}\n--- producer ---\n{produced.stdout}{produced.stderr}"
                  f"\n--- worker ---\n{output}", file=sys.stderr)
            return 1
        print(f"fresh-install: OK: a virtualenv with only `pip install .` ran a Redis-broker worker ({broker})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
