"""Put pybreaker's own test suite, for the installed pybreaker, where the tests look for it.

Usage: ``python .ci/pybreaker_src.py DEST`` (``make pybreaker-src`` runs it with ``.cache/pybreaker-src``).
DEST then holds pybreaker's source tree (``tests/pybreaker_test.py`` among it) and ``VERSION``, the
pybreaker version it is the source of; ``tests/test_circuits_pybreaker_suite.py`` runs that suite's
cases against the shared breaker.

Where the source comes from, in order:
1. ``PYBREAKER_SRC``: an unpacked source tree of pybreaker, or an archive of one (``.tar.gz``,
   ``.zip``: a checkout or release archive of pybreaker's repository at the installed version's tag);
2. the source distribution of the installed version, from the package index (``pip download``).

Exits 1, saying why, when neither holds the suite: the suite's test module then fails under CI.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SUITE = Path("tests") / "pybreaker_test.py"


def _unpack(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(into)
        return
    with tarfile.open(archive) as tarred:
        if sys.version_info >= (3, 11, 4):
            tarred.extractall(into, filter="data")
        else:  # pragma: no cover - older interpreters have no extraction filter
            tarred.extractall(into)


def _tree(root: Path) -> Path | None:
    """The directory under ``root`` holding ``tests/pybreaker_test.py`` (``root`` itself or one level down)."""
    for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if (candidate / SUITE).is_file():
            return candidate
    return None


def _version_of(tree: Path) -> str | None:
    for name, pattern in (("PKG-INFO", r"^Version:\s*(\S+)"), ("pyproject.toml", r'^version\s*=\s*"([^"]+)"')):
        path = tree / name
        if path.is_file():
            found = re.search(pattern, path.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
            if found:
                return found.group(1)
    return None


def _from_env(named: str, work: Path) -> tuple[Path | None, str]:
    path = Path(named)
    if path.is_dir():
        tree = _tree(path)
    elif path.is_file():
        _unpack(path, work / "env")
        tree = _tree(work / "env")
    else:
        return None, f"PYBREAKER_SRC={named} does not exist"
    return tree, "" if tree else f"PYBREAKER_SRC={named} has no {SUITE}"


def _from_index(version: str, work: Path) -> tuple[Path | None, str]:
    download = work / "download"
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--dest", str(download), f"pybreaker=={version}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    archives = sorted(download.glob("pybreaker-*")) if download.is_dir() else []
    if done.returncode != 0 or not archives:
        return None, f"pip could not download pybreaker {version}'s source distribution: {done.stderr.strip()[-500:]}"
    _unpack(archives[0], work / "sdist")
    tree = _tree(work / "sdist")
    if tree is None:
        return None, (f"pybreaker {version}'s source distribution ({archives[0].name}) does not ship its test suite "
                      f"({SUITE}); set PYBREAKER_SRC to a checkout or source archive of pybreaker {version}")
    return tree, ""


def main(dest: Path) -> int:
    version = importlib.metadata.version("pybreaker")
    stamp = dest / "VERSION"
    if (dest / SUITE).is_file() and stamp.is_file() and stamp.read_text().strip() == version:
        print(f"pybreaker-src: pybreaker {version}'s suite is in {dest}")
        return 0
    with tempfile.TemporaryDirectory(prefix="pybreaker-src-") as tmp:
        work = Path(tmp)
        named = os.environ.get("PYBREAKER_SRC", "")
        tree, why = _from_env(named, work) if named else _from_index(version, work)
        if tree is not None:
            found = _version_of(tree)
            if found is not None and found != version:
                tree, why = None, f"the source found is pybreaker {found}, but pybreaker {version} is installed"
        if tree is None:
            print(f"pybreaker-src: FAILED: {why}", file=sys.stderr)
            return 1
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tree, dest)
        stamp.write_text(f"{version}\n")
    print(f"pybreaker-src: pybreaker {version}'s suite unpacked in {dest}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
