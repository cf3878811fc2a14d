"""The test helpers of ``prismatic_celery.testing`` leave nothing behind."""

from __future__ import annotations

import gc
import os
import sys

from prismatic_celery.testing import WorkerProcess


def test_a_worker_process_log_is_readable_until_the_object_goes_then_removed() -> None:
    worker = WorkerProcess("tests.apps.noop", hostname="never-started@testing")
    path = worker._log.name
    worker._log.write(b"worker output\n")
    worker._log.flush()
    assert os.path.exists(path) and worker.log == "worker output\n"
    assert worker.stop() is None, "never started: nothing to stop"
    assert worker.log == "worker output\n", "still readable once stopped"
    del worker
    gc.collect()
    assert not os.path.exists(path), "the log file went with its WorkerProcess"


def test_a_worker_process_that_ran_removes_its_log_when_collected() -> None:
    worker = WorkerProcess("unused", hostname="exits@testing")
    worker.cmd = [sys.executable, "-c", "print('ran')"]  # any subprocess: the log is what is checked
    worker.start()
    assert worker.proc is not None and worker.proc.wait(30) == 0
    assert "ran" in worker.log
    path = worker._log.name
    del worker
    gc.collect()
    assert not os.path.exists(path)
