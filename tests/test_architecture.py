"""The package's architecture, read from its source with :mod:`ast` (nothing is imported): no import cycle, no
import of a higher layer, no module over the size limit, and a ratchet on ``Any``.

Every ``import`` counts, wherever it is: at module level, inside a function, under ``if TYPE_CHECKING:``. Relative
imports are resolved; ``from pkg import name`` where ``name`` is a submodule imports the submodule, and an import
of a package imports its ``__init__``.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "prismatic_celery"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: The layers, low to high, as path globs relative to the package directory. A module may import modules of its
#: own layer and of lower ones, never of a higher one. A file listed by name wins over a glob, and a longer glob
#: over a shorter one (``observability/flower/*`` over ``observability/*``).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("0 foundations: errors, logging, validation, the store", (
        "errors.py", "log.py", "validate.py", "store/*",
    )),
    ("1 configuration and the definitions users write", (
        "config.py", "config_table.py", "supervision/tree.py", "circuits/config.py", "remediation/rules.py",
        "remediation/actions.py",
        "remediation/backoff.py", "remediation/defaults.py", "admission/shedding/config.py",
    )),
    ("2 components", (
        "supervision/*", "circuits/*", "remediation/*", "lessons/*", "admission/*", "observability/*",
    )),
    ("3 the composition root", (
        "runtime.py",
    )),
    ("4 entry points: Celery's hooks, the CLI, Flower, install, testing helpers", (
        "worker/*", "cli/*", "observability/flower/*", "install.py", "testing.py", "__init__.py",
    )),
)
#: A package-level module not listed above that imports nothing of the package but these, and is at most
#: ``HELPER_MAX_LINES`` long, is a small text helper: layer 0.
HELPER_IMPORTS = frozenset({f"{PACKAGE}.errors", f"{PACKAGE}.log"})
HELPER_MAX_LINES = 200

MAX_LINES = 450
#: Ratchets: lower them as ``Any`` goes away, never raise them (measured like ``grep -rPo ': Any\b'`` and
#: ``grep -rPo '\bAny\b'``): 231 and 591 before the architecture work, 11 and 87 after it.
MAX_ANY_ANNOTATIONS = 11
MAX_ANY_TOKENS = 87


# reading the package -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Module:
    name: str  #: dotted, e.g. ``prismatic_celery.supervision.engine``
    path: Path
    rel: str  #: relative to the package directory, POSIX, e.g. ``supervision/engine.py``
    is_package: bool
    source: str

    @property
    def lines(self) -> int:
        return len(self.source.splitlines())


def read_package(package_dir: Path, package: str) -> dict[str, Module]:
    """Every module under ``package_dir`` by dotted name."""
    modules: dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        parts = [package, *rel.removesuffix(".py").split("/")]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        modules[name] = Module(name, path, rel, is_package, path.read_text(encoding="utf-8"))
    return modules


def _base(module: Module, level: int, target: str | None) -> str:
    """The absolute name a (possibly relative) ``from ... import`` starts from."""
    if level == 0:
        return target or ""
    parts = module.name.split(".")
    package = parts if module.is_package else parts[:-1]
    anchor = package[: len(package) - (level - 1)]
    return ".".join([*anchor, *([target] if target else [])])


def imports_of(module: Module, modules: Mapping[str, Module]) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.source, filename=str(module.path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {name for name in found if name in modules and name != module.name}


def import_graph(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    return {name: imports_of(module, modules) for name, module in modules.items()}


def with_parent_packages(graph: Mapping[str, set[str]], modules: Mapping[str, Module],
                         package: str = PACKAGE) -> dict[str, set[str]]:
    """``graph`` plus what Python runs too: importing ``a.b.c`` first runs ``a.b``'s ``__init__`` (the top
    package's own ``__init__``, the public facade, is left out: it runs before any import of the package)."""
    found: dict[str, set[str]] = {}
    for name, targets in graph.items():
        parents = {".".join(t.split(".")[:i]) for t in targets for i in range(2, t.count(".") + 1)}
        found[name] = targets | {p for p in parents if p in modules and p != package and not name.startswith(p + ".")}
    return found


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected component of more than one module, sorted (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_path(graph: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
    """One concrete cycle through the component's first module (for the message): a -> b -> ... -> a."""
    members, start = set(component), component[0]
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph.get(node, ())):
            if succ == start:
                return [*paths[node], start]
            if succ in members and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    return component


def layer_of(module: Module, graph: Mapping[str, set[str]], package: str = PACKAGE) -> int | None:
    """The module's layer: a file named in :data:`LAYERS`, else the longest matching glob, else a small helper."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for layer, (_, globs) in enumerate(LAYERS):
        for pattern in globs:
            if module.rel == pattern:
                return layer
            if fnmatch.fnmatchcase(module.rel, pattern) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), layer)
    if best is not None:
        return best[1]
    helpers = {name.replace(PACKAGE, package, 1) for name in HELPER_IMPORTS}
    if "/" not in module.rel and module.lines <= HELPER_MAX_LINES and graph.get(module.name, set()) <= helpers:
        return 0
    return None


def layering_violations(modules: Mapping[str, Module], graph: Mapping[str, set[str]],
                        package: str = PACKAGE) -> list[str]:
    """``a (layer i) imports b (layer j > i)`` for each import of a higher layer (unassigned modules: skipped)."""
    layers = {name: layer_of(module, graph, package) for name, module in modules.items()}
    found = []
    for name in sorted(graph):
        mine = layers[name]
        for target in sorted(graph[name]):
            theirs = layers[target]
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{modules[name].rel} (layer {mine}) imports {modules[target].rel} (layer {theirs})")
    return found


# the package ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return read_package(PACKAGE_DIR, PACKAGE)


@pytest.fixture(scope="module")
def graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    return import_graph(modules)


def test_no_import_cycles(graph: dict[str, set[str]], modules: dict[str, Module]) -> None:
    """No cycle between the package's modules, counting function-level and ``TYPE_CHECKING`` imports and the
    parent packages' ``__init__`` each import runs. (The layering below reads the explicit imports only: a
    package's ``__init__`` re-exports its modules, so it sits in its package's highest layer.)"""
    full = with_parent_packages(graph, modules)
    found = cycles(full)
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(_describe(full, c) for c in found)


def _describe(graph: Mapping[str, set[str]], component: list[str]) -> str:
    """One cycle of the component, then every import between its modules (the ones to cut are among them)."""
    short = {name: name.removeprefix(f"{PACKAGE}.") for name in component}
    edges = [f"  {short[a]} -> {', '.join(short[b] for b in sorted(graph[a] & set(component)))}" for a in component]
    return (f"{len(component)} modules, e.g. " + " -> ".join(short[n] for n in cycle_path(graph, component))
            + "; their imports of each other:\n" + "\n".join(edges))


def test_every_module_is_assigned_a_layer(modules: dict[str, Module], graph: dict[str, set[str]]) -> None:
    """The layer map stays complete: a new module must be placed in :data:`LAYERS`."""
    missing = sorted(m.rel for m in modules.values() if layer_of(m, graph) is None)
    assert not missing, "assign it a layer in tests/test_architecture.py LAYERS: " + ", ".join(missing)


def test_no_module_imports_a_higher_layer(modules: dict[str, Module], graph: dict[str, set[str]]) -> None:
    found = layering_violations(modules, graph)
    assert not found, f"{len(found)} import(s) of a higher layer:\n" + "\n".join(found)


def test_no_module_is_over_the_line_limit(modules: dict[str, Module]) -> None:
    over = sorted((m.lines, m.rel) for m in modules.values() if m.lines > MAX_LINES)
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(f"{rel} ({n})" for n, rel in reversed(over))


def _count(modules: Mapping[str, Module], pattern: str) -> tuple[int, str]:
    """The package's total of ``pattern`` and its files by count (highest first) for the message."""
    counts = {m.rel: len(re.findall(pattern, m.source)) for m in modules.values()}
    by_file = sorted(((n, rel) for rel, n in counts.items() if n), reverse=True)
    return sum(counts.values()), ", ".join(f"{rel} {n}" for n, rel in by_file)


def test_any_annotations_stay_under_the_ratchet(modules: dict[str, Module]) -> None:
    total, by_file = _count(modules, r": Any\b")
    assert total <= MAX_ANY_ANNOTATIONS, f"{total} `: Any` annotations (at most {MAX_ANY_ANNOTATIONS}): {by_file}"


def test_any_tokens_stay_under_the_ratchet(modules: dict[str, Module]) -> None:
    total, by_file = _count(modules, r"\bAny\b")
    assert total <= MAX_ANY_TOKENS, f"{total} `Any` tokens (at most {MAX_ANY_TOKENS}): {by_file}"


# the graph code itself, on a tiny package ----------------------------------------------------------------------
def _write(root: Path, files: Mapping[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        (root / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "pkg" / rel).write_text(text, encoding="utf-8")
    return read_package(root / "pkg", "pkg")


def test_a_cycle_through_a_function_level_and_a_type_checking_import_is_found(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "def f():\n    from pkg.sub import b\n    return b\n",
        "sub/__init__.py": "",
        "sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n",
        "c.py": "from . import a\n",
        "d.py": "import pkg.a\n",
    })
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.sub.b"}, "from pkg.sub import b: the submodule, not only the package"
    assert graph["pkg.sub.b"] == {"pkg.c"}, "a relative import two levels up, under TYPE_CHECKING"
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert cycle_path(graph, ["pkg.a", "pkg.c", "pkg.sub.b"]) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_an_import_of_a_package_is_an_import_of_its_init_and_no_cycle_without_one(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "from pkg.sub import thing\n",
        "sub/__init__.py": "from .b import thing\n",
        "sub/b.py": "import pkg.sub.c\nthing = 1\n",
        "sub/c.py": "",
    })
    graph = import_graph(modules)
    assert graph["pkg"] == {"pkg.sub"}, "`thing` is a name of pkg.sub, not a submodule"
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert cycles(graph) == []


def test_a_cycle_through_a_parent_packages_init_is_found(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "from pkg.other import x\n",
        "sub/b.py": "",
        "other.py": "from pkg.sub.b import y\nx = 1\n",
    })
    graph = import_graph(modules)
    assert cycles(graph) == [], "no explicit cycle: other imports sub.b, sub's __init__ imports other"
    full = with_parent_packages(graph, modules, "pkg")
    assert full["pkg.other"] == {"pkg.sub.b", "pkg.sub"}, "importing pkg.sub.b runs pkg.sub's __init__ first"
    assert cycles(full) == [["pkg.other", "pkg.sub"]]


def test_an_import_of_a_higher_layer_is_reported(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "text.py": "from .errors import E\n",
        "runtime.py": "",
        "supervision/__init__.py": "",
        "supervision/engine.py": "def f():\n    from pkg import runtime\n",
        "supervision/tree.py": "from pkg.supervision import engine\nfrom pkg import text\n",
    })
    graph = import_graph(modules)
    layers = {m.rel: layer_of(m, graph, "pkg") for m in modules.values()}
    assert layers == {"__init__.py": 4, "errors.py": 0, "text.py": 0, "runtime.py": 3, "supervision/__init__.py": 2,
                      "supervision/engine.py": 2, "supervision/tree.py": 1}
    assert layering_violations(modules, graph, "pkg") == [
        "supervision/engine.py (layer 2) imports runtime.py (layer 3)",
        "supervision/tree.py (layer 1) imports supervision/engine.py (layer 2)",
    ]
