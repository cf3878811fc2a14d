"""The flowerconfig's routes inside an in-process Flower (no broker, no Redis: a memory store).

Flower has no plug-in hook for pages: ``prismatic_celery.observability.flower.install`` inserts
its routes into ``flower.urls.handlers`` before Flower builds its application.
These tests build Flower's real tornado application and call it over HTTP on
127.0.0.1.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from tornado.options import options as flower_options
from tornado.testing import AsyncHTTPTestCase

import prismatic_celery
import prismatic_celery.runtime
from prismatic_celery.observability.flower import install, installed_routes
from prismatic_celery.store import MemoryStore, RedisStore
from prismatic_celery.testing import serve
from tests.conftest import free_port

flower_app = pytest.importorskip("flower.app")
flower_urls = pytest.importorskip("flower.urls")


def make_celery() -> Celery:
    app = Celery("routes", broker="memory://", set_as_current=False)
    app.conf.update(prismatic_domains={"core": {"strategy": "rest_for_one", "children": ["storage", "cache"]}},
                    prismatic_store_url="memory://", prismatic_circuits={"payments": {}})
    prismatic_celery.install(app, store=MemoryStore())
    runtime = prismatic_celery.runtime.get_runtime(app)
    assert runtime is not None
    serve(runtime)
    return app


def test_install_adds_the_two_routes_once_before_flowers_catch_all() -> None:
    """Idempotent, and placed where tornado will reach them (before the 404 route)."""
    install(metrics=False)
    install(metrics=False)
    assert sorted(installed_routes()) == ["/api/supervision", "/supervision"]
    patterns = [(getattr(r, "regex", None) and r.regex.pattern) or r[0] for r in flower_urls.handlers]
    assert patterns[-1] in (".*", ".*$")
    assert patterns.index("/supervision$") < len(patterns) - 1


class FlowerCase(AsyncHTTPTestCase):
    """Flower's own application with the plugin's routes; options per test class."""

    overrides: dict[str, Any] = {}

    def get_app(self) -> Any:
        install(metrics=False)
        self.celery = make_celery()
        runtime = prismatic_celery.runtime.get_runtime(self.celery)
        assert runtime is not None
        self.runtime = runtime
        opts = SimpleNamespace(**{**flower_options.as_dict(), "enable_events": False, **self.overrides})
        return flower_app.Flower(capp=self.celery, options=opts, io_loop=self.io_loop,
                                 **{**flower_urls.settings, "xsrf_cookies": False})

    def tearDown(self) -> None:
        self._app.executor.shutdown(wait=False)  # Flower's thread pool
        super().tearDown()

    def get_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.get_http_port()}{path}"


class TestWithoutAuth(FlowerCase):
    """Flower's rules without auth: pages are open, APIs need FLOWER_UNAUTHENTICATED_API."""

    def test_the_page_renders_the_tree_inside_flowers_layout(self) -> None:
        """One page: Flower's navbar, the score, every child, the circuit."""
        self.runtime.circuits.open_for("payments", 60_000)
        response = self.fetch("/supervision?refresh=0")
        assert response.code == 200
        page = response.body.decode()
        assert "app-navbar" in page, "Flower's base template"
        assert 'id="health-score">85<' in page
        assert 'data-child="storage"' in page and 'data-child="cache"' in page
        assert 'data-circuit="payments" data-state="open"' in page

    def test_the_api_follows_flowers_rule_for_unauthenticated_apis(self) -> None:
        """401 unless FLOWER_UNAUTHENTICATED_API is set, like Flower's own /api routes."""
        assert self.fetch("/api/supervision").code == 401
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
            response = self.fetch("/api/supervision")
        assert response.code == 200
        data = json.loads(response.body)
        assert data["namespace"] == "routes" and data["score"] == 100 and "events" in data

    def test_a_store_that_does_not_answer_shows_a_banner_and_no_score(self) -> None:
        """Unknown: a banner naming the store (password masked), '?' for the score, every child UNKNOWN."""
        url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
        self.runtime.store = RedisStore(url, timeout_s=0.2)
        page = self.fetch("/supervision?refresh=0").body.decode()
        assert 'id="store-unknown"' in page and "redis://:***@127.0.0.1" in page and "s3cret" not in page
        assert 'id="health-score">?<' in page and 'id="health-state">UNKNOWN<' in page
        assert 'data-child="storage" data-state="unknown"' in page and 'data-state="running"' not in page

    def test_text_from_the_store_is_escaped(self) -> None:
        """An event field cannot inject markup into the page."""
        self.runtime.emit("resume", domain="core", queues="<script>alert(1)</script>", reason="operator")
        page = self.fetch("/supervision?refresh=0").body.decode()
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


class TestWithBasicAuth(FlowerCase):
    """--basic-auth protects the page and the API."""

    overrides = {"basic_auth": ["ops:pw"]}

    def test_no_or_wrong_credentials_get_401(self) -> None:
        """401 (the page with Flower's WWW-Authenticate challenge); 200 with the credentials."""
        good = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
        bad = {"Authorization": "Basic " + base64.b64encode(b"ops:nope").decode()}
        assert "Basic" in self.fetch("/supervision").headers.get("WWW-Authenticate", "")
        for path in ("/supervision", "/api/supervision"):
            assert self.fetch(path).code == 401
            assert self.fetch(path, headers=bad).code == 401
            assert self.fetch(path, headers=good).code == 200


class TestUrlPrefix(FlowerCase):
    """--url-prefix moves the routes like Flower's own."""

    overrides = {"url_prefix": "flower"}

    def test_the_routes_live_under_the_prefix(self) -> None:
        assert self.fetch("/flower/supervision?refresh=0").code == 200
        assert self.fetch("/supervision").code == 404
