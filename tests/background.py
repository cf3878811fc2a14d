"""Subprocess runs that spend most of their time waiting, started together: the benchmarks' quick runs and the
demo's two runs (outages, backoffs, drains and worker start-ups are waits, not work).

A test module registers a run with :func:`register`, naming the tests that read it. The session fixture
``background`` (tests/conftest.py) starts, the first time a test asks for it, every registered run one of whose
tests is selected; each test then waits for its own run's result. The suite waits for the longest of them, not
for their sum. Each run has its own Redis server or leased database: they share nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

__all__ = ["Background", "register"]

#: What starts one run, given an ExitStack for whatever it holds (a leased database); None when it cannot run here.
Start = Callable[[ExitStack], "subprocess.Popen[str] | None"]


@dataclass(frozen=True)
class _Run:
    start: Start
    tests: tuple[str, ...]
    phase: int


_REGISTERED: dict[str, _Run] = {}


def register(name: str, start: Start, *tests: str, phase: int = 1) -> None:
    """Register the run ``name``, read by ``tests`` (node ids such as ``tests/test_demo.py::test_x``).

    Runs of phase 1 start together; those of phase 2 start together once every run of phase 1 has ended (a run
    that keeps the CPU busy must not overlap one whose scenario depends on timing)."""
    _REGISTERED[name] = _Run(start, tests, phase)


class Background:
    """The registered runs of the selected tests, started at once."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.done: dict[str, subprocess.CompletedProcess[str]] = {}
        self.wanted: list[str] = []
        self.phase = 0

    def launch(self, selected: set[str]) -> None:
        """Note every registered run one of whose tests is in ``selected``, and start those of phase 1."""
        self.wanted = [name for name, run in _REGISTERED.items() if set(run.tests) & selected]
        self._start_phase(1)

    def _start_phase(self, phase: int) -> None:
        self.phase = phase
        for name in self.wanted:
            run = _REGISTERED[name]
            if run.phase == phase:
                proc = run.start(self.stack)
                if proc is not None:
                    self.procs[name] = proc

    def started(self, name: str) -> bool:
        """True when ``name`` runs or ran, or will once its phase comes (False: it cannot run here)."""
        if name in self.wanted and _REGISTERED[name].phase > self.phase:
            self._next_phase(timeout_s=600)
        return name in self.procs

    def _next_phase(self, timeout_s: float) -> None:
        for name in list(self.procs):
            if _REGISTERED[name].phase == self.phase:
                self.result(name, timeout_s)
        self._start_phase(self.phase + 1)

    def result(self, name: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Wait (at most ``timeout_s`` more) for the run ``name``; killed when it takes longer."""
        while name in self.wanted and _REGISTERED[name].phase > self.phase:
            self._next_phase(timeout_s)
        if name not in self.done:
            proc = self.procs[name]
            try:
                out, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err += f"\n(killed after waiting {timeout_s} s for it)"
            self.done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return self.done[name]

    def stop(self) -> None:
        """Kill whatever still runs (a test that failed early did not wait for its run)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
