"""`make test` shares the Redis on 127.0.0.1:6379 with whoever else uses it: it flushes only databases it leased.

The integration tests lease one of databases 1-15 at a time (``tests.conftest.leased_db``: a key with a TTL in
database 0), flush it before and after the test, and release it; nothing else in the suite flushes anything of
that server (the benchmarks flush databases of the private ``redis-server`` they start themselves, the cluster
fixture its own nodes, a fakeredis server only itself).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLUSH = re.compile(r"\.(flushdb|flushall)\(|FLUSH(DB|ALL)", re.IGNORECASE)


def test_only_the_lease_flushes_a_database_of_the_shared_redis() -> None:
    found = {}
    sources = [path for tree in ("tests", "examples", "prismatic_celery") for path in ROOT.glob(f"{tree}/**/*.py")]
    for path in sorted(sources):
        lines = [n for n, line in enumerate(path.read_text().splitlines(), 1)
                 if FLUSH.search(line) and "fakeredis" not in line]  # an in-process fake is no shared server
        if lines and path != Path(__file__).resolve():
            found[str(path.relative_to(ROOT))] = lines
    assert set(found) == {"tests/conftest.py"}, found
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    lease = conftest.split("def leased_db(", 1)[1].split("\ndef ", 1)[0]
    assert conftest.count("flushdb()") == lease.count("flushdb()") == 2, "flushed only inside leased_db"
    assert "range(1, 16)" in conftest, "databases 1-15 are leased; database 0 is never flushed"


def test_the_benchmarks_flush_only_their_own_redis_server() -> None:
    for name in ("chaos", "outage"):
        text = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert "redis_server(" in text and "6379" not in text, name
