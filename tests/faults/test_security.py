"""Security: nothing read from Redis is unpickled or evaluated; Lua scripts take their keys as KEYS; the
standalone Prometheus exporter binds 127.0.0.1 by default.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import pickle
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from prismatic_celery.testing import wait_for
from tests.faults import corrupt
from tests.faults.conftest import (
    CLI_READS,
    LOG_CONF,
    cli,
    exercise_readers,
    faults_env,
    faults_runtime,
    no_crash,
    plugin_log,
    worker,
)

PACKAGE = Path(__file__).resolve().parents[2] / "prismatic_celery"


class _Trap:
    """Unpickling this calls ``open(path, 'w')``: the file appearing proves something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _payloads(marker: Path) -> list[bytes]:
    expression = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return [pickle.dumps(_Trap(str(marker)), protocol=p) for p in (0, 2, 5)] + [
        expression.encode(), f'"{expression}"'.encode(), f"eval({expression!r})".encode(),
        b"{\"__reduce__\": \"os.system\", \"py/object\": \"os.system\"}",
    ]


@pytest.mark.integration
def test_pickles_and_python_expressions_in_redis_are_treated_as_data(
    redis_url: str, namespace: str, raw: redis.Redis, tmp_path: Path
) -> None:
    """Trap payloads at every key kind: every API and CLI reader and a working worker leave the trap shut."""
    marker = tmp_path / "trap-sprung"
    payloads = _payloads(marker)
    pickle.loads(payloads[1])  # the test's own deliberate unpickle: the trap works
    assert marker.exists()
    marker.unlink()

    conf = {**LOG_CONF, "task_reject_on_worker_lost": True, "prismatic_backoff_initial_s": 0.05,
            "prismatic_backoff_max_s": 0.05, "prismatic_backoff_jitter_s": 0}
    app, runtime = faults_runtime(redis_url, namespace, **conf)
    planted = corrupt.plant_payloads(raw, namespace, payloads)
    exercise_readers(app, runtime)
    for args in (*CLI_READS, ["dlq", "replay", "evo", "--all"], ["dlq", "list", "evo", "--json"]):
        result = cli(app, *args)
        no_crash(result, 0, 1, 2, 3, 4)
        assert "Traceback" not in result.output
    assert not marker.exists()

    with worker(namespace, faults_env(redis_url, namespace, redis_url, store=redis_url, conf=conf),
                name="trap") as w:
        w.wait_ready(app)
        work = app.tasks["faults.work"]
        results = [work.apply_async((f"t{i}", 0.0, i % 2), queue=q)
                   for i, q in enumerate(("storage", "cache", "sources", "monitor", "mendel", "fitness"))]
        assert [r.get(timeout=30) for r in results] == [1, 2] * 3
        dying = app.tasks["basic.poison"].apply_async(("trap",), queue="monitor", task_id="hostile-task-id")
        wait_for(lambda: runtime.dlq.get("osint", dying.id) is not None, timeout_s=30, message="quarantined")
        failed = app.tasks["faults.reject"].apply_async(("r",), queue="cache")
        failed.get(timeout=30, propagate=False)
        log = plugin_log(w.log)
    assert not marker.exists(), "a payload read from Redis was unpickled or evaluated"
    assert "Traceback" not in log
    assert any(raw.exists(name) for name in planted)


_FORBIDDEN_CALLS = {"eval", "exec", "compile", "execfile"}
_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}


def _code_tokens(path: Path) -> list[tokenize.TokenInfo]:
    """The file's tokens without comments (strings stay: a docstring naming pickle is fine, so only names count)."""
    source = path.read_text(encoding="utf-8")
    return [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]


def test_the_package_never_unpickles_evaluates_or_executes() -> None:
    """No eval/exec/compile call, no pickle-like module, no unsafe yaml.load in prismatic_celery/ (comments aside)."""
    findings = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        tokens = [t for t in _code_tokens(path) if t.type not in (tokenize.NL, tokenize.NEWLINE)]
        for i, tok in enumerate(tokens):
            if tok.type != tokenize.NAME:
                continue
            after = tokens[i + 1].string if i + 1 < len(tokens) else ""
            before = tokens[i - 1].string if i else ""
            where = f"{path.relative_to(PACKAGE.parent)}:{tok.start[0]}"
            if tok.string in _FORBIDDEN_CALLS and after == "(" and before != ".":
                findings.append(f"{where} {tok.string}(")
            if tok.string in _FORBIDDEN_MODULES and before in ("import", "from", ",", ""):
                findings.append(f"{where} import {tok.string}")
            if tok.string == "load" and before == "." and i >= 2 and tokens[i - 2].string == "yaml":
                findings.append(f"{where} yaml.load")
            if tok.string in ("loads", "load", "Unpickler") and before == "." and i >= 2 and \
                    tokens[i - 2].string in _FORBIDDEN_MODULES:
                findings.append(f"{where} {tokens[i - 2].string}.{tok.string}")
    assert not findings, findings
    text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    for needle in ("pickle.loads", "eval(", "exec("):
        code_lines = [line for line in text.splitlines() if needle in line and not line.lstrip().startswith("#")
                      and not re.search(r"\b(?:call|s?execute)\(", line)]
        assert not code_lines, (needle, code_lines)


# redis commands that take no key as their first argument (PUBLISH's first argument is a channel)
_KEYLESS = {"TIME", "PUBLISH", "INFO", "PING", "ECHO"}
_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'\s*(?:,\s*([^,)]+))?")
_LOCAL_FROM_KEYS = re.compile(r"^\s*local\s+([\w\s,]+?)\s*=\s*(KEYS\[[^\]]+\](?:\s*,\s*KEYS\[[^\]]+\])*)\s*$", re.M)
_FUNCTION = re.compile(r"local\s+function\s+(\w+)\(([^)]*)\)")


def _key_names(source: str) -> set[str]:
    """Local variables bound only from KEYS (``local a, b = KEYS[1], KEYS[2]``)."""
    names: set[str] = set()
    for match in _LOCAL_FROM_KEYS.finditer(source):
        names.update(n.strip() for n in match.group(1).split(","))
    for match in re.finditer(r"^\s*local\s+([\w\s,]+?)\s*=\s*(.+)$", source, re.M):
        lhs = [n.strip() for n in match.group(1).split(",")]
        rhs = [v.strip() for v in match.group(2).split(",")]
        for name, value in zip(lhs, rhs, strict=False):
            if value.startswith("KEYS["):
                names.add(name)
    return names


def _call_arguments(source: str, start: int) -> list[str]:
    """The top-level arguments of the call whose '(' is at ``start`` (balanced brackets, no string parsing)."""
    depth, current, args = 0, "", []
    for char in source[start + 1:]:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                return [*args, current.strip()]
            depth -= 1
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += char
    return args


def _params_fed_by_keys(source: str, name: str, param: str) -> bool:
    """Every call of local function ``name`` passes a KEYS element at ``param``'s position."""
    match = re.search(rf"local\s+function\s+{name}\(([^)]*)\)", source)
    if match is None:
        return False
    position = [p.strip() for p in match.group(1).split(",")].index(param)
    calls = [m.end() - 1 for m in re.finditer(rf"(?<![\w.]){name}\(", source)
             if not source[:m.start()].rstrip().endswith("function")]
    return bool(calls) and all(_call_arguments(source, at)[position].startswith("KEYS[") for at in calls)


def _lua_key_problems(name: str, text: str) -> list[str]:
    """Heuristic: the key argument of every redis.call must be KEYS[...] or a name bound only from KEYS (a local,
    or a parameter every caller feeds with KEYS[...]); never a literal, a concatenation or an ARGV value."""
    problems = []
    source = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    for banned in ("loadstring", "dofile", "require", "load"):  # Lua's own code loaders
        defined_here = re.search(rf"local\s+function\s+{banned}\(", source)
        if not defined_here and re.search(rf"(?<![\w.]){banned}\s*\(", source):
            problems.append(f"{name}: calls {banned}")
    locals_from_keys = _key_names(source)
    functions = {m.group(1): [p.strip() for p in m.group(2).split(",")] for m in _FUNCTION.finditer(source)}
    for call in _CALL.finditer(source):
        command, first = call.group(1).upper(), (call.group(2) or "").strip()
        if command in _KEYLESS:
            continue
        ok = first.startswith("KEYS[") and ".." not in first
        if not ok and re.fullmatch(r"\w+", first):
            owner = next((f for f, params in functions.items() if first in params
                          and source.find(f"function {f}(") < call.start()), None)
            ok = first in locals_from_keys or (owner is not None and _params_fed_by_keys(source, owner, first))
        if not ok:
            problems.append(f"{name}:{source.count(chr(10), 0, call.start()) + 1}: {command} key {first!r}")
    if not list(_CALL.finditer(source)):
        problems.append(f"{name}: no redis.call found (is the heuristic still parsing it?)")
    return problems


def _as_loaded(path: Path) -> str:
    """A script's source as Redis runs it: a shared prelude (``window.lua``) first when the script uses it."""
    text = path.read_text(encoding="utf-8")
    prelude = path.with_name("window.lua")
    if path.name != "window.lua" and prelude.exists() and "executions(" in text:
        return prelude.read_text(encoding="utf-8") + "\n" + text
    return text


def test_every_lua_script_takes_its_keys_as_keys() -> None:
    """Every redis.call in every .lua file under prismatic_celery/ names its key through KEYS (a prelude is checked
    inside each script that loads it, where its functions' callers are)."""
    scripts = sorted(p for p in PACKAGE.rglob("*.lua") if p.name != "window.lua")
    assert len(scripts) >= 8
    problems = [p for path in scripts for p in _lua_key_problems(path.name, _as_loaded(path))]
    assert not problems, problems
    assert any("function executions(" in _as_loaded(p) for p in scripts), "the prelude is checked where it is used"


@pytest.mark.parametrize("bad", [
    "return redis.call('GET', 'prismatic:ns:pause:' .. ARGV[1])",
    "local k = 'prismatic:' .. ARGV[1]\nreturn redis.call('DEL', k)",
    "return redis.call('HGETALL', ARGV[1])",
    "local function f(key) return redis.call('GET', key) end\nreturn f(ARGV[2])",
    "return loadstring(ARGV[1])()",
])
def test_the_lua_heuristic_flags_keys_built_inside_a_script(bad: str) -> None:
    """The check above is not vacuous: a key built from ARGV or literals is reported."""
    assert _lua_key_problems("bad.lua", bad)


def test_the_standalone_exporter_binds_localhost_by_default() -> None:
    """`celery supervision exporter` and make_server default to 127.0.0.1; a server built with defaults binds it."""
    if importlib.util.find_spec("prismatic_celery.observability.flower.metrics") is None:
        pytest.skip("prismatic_celery/observability/flower/metrics.py does not exist yet (the exporter is being built)")
    prometheus = importlib.import_module("prismatic_celery.observability.flower.metrics")
    assert inspect.signature(prometheus.make_server).parameters["address"].default == "127.0.0.1"
    from prismatic_celery.cli.main import supervision

    exporter = supervision.commands["exporter"]
    address = next(p for p in exporter.params if p.name == "address")
    assert address.default == "127.0.0.1"
    app = Celery("exporter", broker="memory://", set_as_current=False)
    app.conf.update({"prismatic_store_url": "memory://", "prismatic_domains": {"core": {"children": ["q"]}}})
    import prismatic_celery

    prismatic_celery.install(app)
    server = prometheus.make_server(app, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
