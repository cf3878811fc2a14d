"""``celery -A proj supervision exporter|flowerconfig``: the metrics for Prometheus without Flower, and the
shipped Flower config."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click

from .common import emit, json_option, runtime_of

__all__ = ["exporter", "flowerconfig"]


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=9808, show_default=True, help="TCP port (0: any).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--json", "as_json", is_flag=True, help="Print the address served as JSON.")
@click.pass_context
def exporter(ctx: click.Context, port: int, address: str, as_json: bool) -> None:
    """Serve the supervision metrics for Prometheus at http://ADDRESS:PORT/metrics (for deployments without Flower)."""
    runtime = runtime_of(ctx)
    try:
        from ..observability.flower.metrics import make_server
    except ImportError as exc:
        raise click.ClickException(f"{exc} (install prismatic-celery[prometheus])") from None
    server = make_server(runtime.app, port=port, address=address)
    bound = server.server_address[1]
    url = f"http://{address}:{bound}/metrics"
    emit({"url": url, "namespace": runtime.keys.namespace}, as_json,
         f"prismatic exporter: {url} (namespace {runtime.keys.namespace})")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command(name="flowerconfig")
@json_option
def flowerconfig(as_json: bool) -> None:
    """Print the path of the shipped Flower config.

    Use: ``celery -A proj flower --conf="$(celery -A proj supervision flowerconfig)"``.
    """
    spec = importlib.util.find_spec("prismatic_celery.observability.flower.flowerconfig")
    if spec is None or spec.origin is None:
        raise click.ClickException("prismatic_celery.observability.flower.flowerconfig is missing from this "
                                   "installation")
    path = str(Path(spec.origin))
    emit({"path": path}, as_json, path)
