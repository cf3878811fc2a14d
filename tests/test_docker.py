"""The docker files parse, and every service runs a command the project provides."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent


def test_compose_services_run_commands_the_package_provides() -> None:
    """Each service is Redis or a `celery -A examples.prismatic_platform.app ...` command that exists."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert "redis" in services
    from click.testing import CliRunner  # noqa: F401  (click is what `celery` is built on)

    from prismatic_celery.cli.main import supervision

    assert {"flower", "demo"} <= set(services) and any(n.startswith("worker-") for n in services)
    for name, service in services.items():
        if name == "redis":
            continue
        command = service["command"]
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}, f"{name} waits for Redis"
        if command[:2] == ["sh", "-c"]:
            command = shlex.split(command[2].replace("$$", "$"))
            assert command[0] == "exec", name
            command = command[1:]
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, f"{name}: no module {command[2]}"
            continue
        assert command[:3] == ["celery", "-A", "examples.prismatic_platform.app"], name
        assert command[3] in {"worker", "supervision", "flower"}, name
        if command[3] == "supervision":
            assert command[4] in supervision.commands, f"{name}: unknown subcommand {command[4]}"
        if command[3] == "flower":
            conf = next(arg for arg in command if arg.startswith("--conf="))
            assert conf == '--conf=$(celery -A examples.prismatic_platform.app supervision flowerconfig)', name
            assert "flowerconfig" in supervision.commands and "site-packages" not in conf
        if "--domain" in command:
            from examples.prismatic_platform.app import TREE

            assert command[command.index("--domain") + 1] in TREE, name
        assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_redis_has_a_healthcheck_the_services_wait_for() -> None:
    """Redis answers `redis-cli ping` before any worker, Flower or the demo starts (no silent embedded demo)."""
    redis_service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["redis"]
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert int(redis_service["healthcheck"]["retries"]) >= 10


def test_dockerfile_installs_the_package() -> None:
    """The image installs the project as a user does (celery[redis] comes with it) and defaults to a worker."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert text.startswith("# ") and "FROM python:3.11" in text
    assert "pip install --no-cache-dir '.[flower,prometheus]'" in text
    assert 'CMD ["celery", "-A", "examples.prismatic_platform.app", "worker"' in text
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("celery[redis]") for d in dependencies), "a Redis broker works from a plain install"


def test_the_build_context_leaves_out_virtualenvs_caches_and_history() -> None:
    """.dockerignore keeps .git, .venv, caches, tests and benchmarks out of the image's build context."""
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "**/__pycache__", "tests", "benchmarks"} <= ignored
