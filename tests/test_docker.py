"""The docker files parse, and every service runs a command the project provides."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_services_run_commands_the_package_provides() -> None:
    """Each service is Redis or a `celery -A examples.prismatic_platform.app ...` command that exists."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert "redis" in services
    from click.testing import CliRunner  # noqa: F401  (click is what `celery` is built on)

    from prismatic_celery.cli import supervision

    assert {"flower", "demo"} <= set(services) and any(n.startswith("worker-") for n in services)
    for name, service in services.items():
        if name == "redis":
            continue
        command = service["command"]
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, f"{name}: no module {command[2]}"
            continue
        assert command[:3] == ["celery", "-A", "examples.prismatic_platform.app"], name
        assert command[3] in {"worker", "supervision", "flower"}, name
        if command[3] == "supervision":
            assert command[4] in supervision.commands, f"{name}: unknown subcommand {command[4]}"
        if command[3] == "flower":
            conf = next(arg for arg in command if arg.startswith("--conf="))
            assert conf.endswith("prismatic_celery/flower/flowerconfig.py"), name
            assert importlib.util.find_spec("prismatic_celery.flower.flowerconfig") is not None
        if "--domain" in command:
            from examples.prismatic_platform.app import TREE

            assert command[command.index("--domain") + 1] in TREE, name
        assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_dockerfile_installs_the_package() -> None:
    """The image installs the project with its extras and defaults to a worker."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert text.startswith("# ") and "FROM python:3.11" in text
    assert "pip install --no-cache-dir '.[flower,prometheus]'" in text
    assert 'CMD ["celery", "-A", "examples.prismatic_platform.app", "worker"' in text
