"""pybreaker's own test suite, run against the shared breaker.

The suite is pybreaker's ``tests/pybreaker_test.py`` from pybreaker's source for the installed
version (``make pybreaker-src`` puts it in ``.cache/pybreaker-src``; see ``.ci/pybreaker_src.py``),
never a copy in this project. Its storage-generic cases (``CircuitBreakerStorageBasedTestCase``)
and its Redis concurrency cases (``CircuitBreakerRedisConcurrencyTestCase``, threads standing for
machines) build their breakers through the module-level name ``CircuitBreaker``: each class here
points that name at a factory building a :class:`SharedBreaker` on its store, whatever storage
the case asked for, and changes nothing else. The storage cases run on the real Redis and on the
in-process store; the concurrency cases on the real Redis.

No source distribution of pybreaker on PyPI ships its tests (checked 0.2.2 to 1.4.1); they live
only in pybreaker's repository. Where the suite cannot be had (this project's CI reaches package
registries only) the case below is skipped, saying why; with ``PYBREAKER_SRC`` set to a checkout
or source archive of the installed version, ``make test`` runs every case.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import unittest
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest

from prismatic_celery.circuits import CircuitStorage, SharedBreaker
from prismatic_celery.store import MemoryStore, RedisStore, Store
from prismatic_celery.store.keys import Keys
from tests import circuits_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / ".cache" / "pybreaker-src"
SUITE = SOURCE / "tests" / "pybreaker_test.py"


def _load() -> tuple[ModuleType | None, str]:
    installed = importlib.metadata.version("pybreaker")
    stamp = SOURCE / "VERSION"
    if not SUITE.is_file() or not stamp.is_file():
        return None, (f"pybreaker's own test suite is not in {SUITE.relative_to(ROOT)}: no PyPI source "
                      "distribution ships it; set PYBREAKER_SRC to a checkout of pybreaker and run `make test`")
    if stamp.read_text().strip() != installed:
        return None, f"{SOURCE.relative_to(ROOT)} holds pybreaker {stamp.read_text().strip()}'s suite, " \
                     f"{installed} is installed: run `make pybreaker-src`"
    spec = importlib.util.spec_from_file_location("pybreaker_own_suite", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, ""


suite, missing = _load()

if suite is None:

    def test_pybreakers_own_suite_is_available() -> None:
        """pybreaker's own cases run against the shared breaker when its suite can be had (see the docstring)."""
        pytest.skip(missing)

else:

    class _OnSharedBreaker(unittest.TestCase):
        """Points the suite's ``CircuitBreaker`` at a factory of shared breakers on ``backend``'s store."""

        backend = "redis"

        def setUp(self) -> None:
            namespace = f"tc{uuid.uuid4().hex[:10]}"
            self._url = fx.require_redis() if self.backend == "redis" else ""
            self._namespace = namespace
            self._store: Store = RedisStore(self._url) if self._url else MemoryStore()
            keys = Keys(namespace)
            self.shared_storage = CircuitStorage(self._store, keys, "suite", channel=keys.key("circuit-events"))

            def shared_breaker(*args: Any, **kwargs: Any) -> SharedBreaker:
                kwargs["state_storage"] = self.shared_storage  # in place of the storage the case asked for
                return SharedBreaker(*args, **kwargs)

            patcher = mock.patch.object(suite, "CircuitBreaker", shared_breaker)
            patcher.start()
            self.addCleanup(patcher.stop)
            self.addCleanup(self._drop_store)
            super().setUp()

        def _drop_store(self) -> None:
            if self._url:
                fx.delete_namespace(self._url, self._namespace)
            self._store.close()

    class TestPybreakerStorageCasesOnRedis(_OnSharedBreaker, suite.CircuitBreakerStorageBasedTestCase):
        """pybreaker's storage-generic cases; the shared breaker on the real Redis."""

        def setUp(self) -> None:
            super().setUp()
            self.breaker_kwargs = {"state_storage": self.shared_storage}
            self.breaker = suite.CircuitBreaker(**self.breaker_kwargs)

    class TestPybreakerStorageCasesInMemory(TestPybreakerStorageCasesOnRedis):
        """pybreaker's storage-generic cases; the shared breaker on the in-process store."""

        backend = "memory"

    class TestPybreakerRedisConcurrencyCases(_OnSharedBreaker, suite.CircuitBreakerRedisConcurrencyTestCase):
        """pybreaker's Redis concurrency cases (its own setUp and tearDown); the shared breaker on the real Redis."""
