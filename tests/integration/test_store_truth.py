"""No silent per-process store, and no store password where Celery prints settings (real workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from prismatic_celery.testing import WorkerProcess
from tests.apps.basic import make_app
from tests.conftest import RedisServer
from tests.integration.conftest import ROOT, basic_env

APP = textwrap.dedent("""
    from celery import Celery
    import prismatic_celery
    app = Celery("nostore", broker="amqp://guest:guest@127.0.0.1:5672//")
    app.conf.prismatic_domains = {"core": {"children": ["jobs"]}}
    prismatic_celery.install(app)
""")


@pytest.mark.integration
def test_a_worker_without_a_store_to_share_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    """A RabbitMQ broker, no Redis result backend, no prismatic_store_url: exit 1 and one line naming the
    setting, before the worker connects to anything; no traceback, no password."""
    (tmp_path / "nostore.py").write_text(APP)
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "nostore", "worker", "-P", "solo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 1, output
    assert len(errors) == 1 and "invalid configuration: prismatic_store_url: not set" in errors[0], output
    assert "Traceback" not in output and "guest:guest@" not in output


@pytest.mark.integration
def test_inspect_conf_of_a_real_worker_masks_the_store_password(redis_url: str, redis_server: RedisServer,
                                                                 namespace: str) -> None:
    """`celery inspect conf` (what Flower's worker page shows) masks prismatic_store_url's password as Celery
    masks broker_url's."""
    redis.Redis(port=redis_server.port).config_set("requirepass", "s3cret")
    store = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    app = make_app(redis_url, namespace, store)
    hostname = f"conf-{namespace}@test"
    with WorkerProcess("tests.apps.basic", hostname=hostname, pool="solo", cwd=ROOT,
                       env=basic_env(redis_url, namespace, {}, store)) as worker:
        worker.wait_ready(app)
        replies = app.control.inspect(destination=[hostname], timeout=5).conf() or {}
        assert "s3cret" not in str(replies)
        assert replies[hostname]["prismatic_store_url"] == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    app.close()
