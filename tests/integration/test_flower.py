"""Flower with the plugin's flowerconfig: the page, the API, /metrics, auth, and a real browser.

Given one live run (a real prefork worker on a real Redis in which osint
escalated after two budget overruns, telemetry is paused by an operator and
the payments circuit is open), when the CLI, the inspect command, Flower's
page and API, Flower's /metrics and the standalone exporter are asked, then
they all report the same numbers; the page is behind Flower's auth; and
headless Chromium shows the paused child and the open circuit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from prismatic_celery.observability.health import summary_numbers
from prismatic_celery.store.keys import Keys
from prismatic_celery.testing import WorkerProcess, wait_for
from tests.apps.basic import make_app
from tests.conftest import leased_db

ROOT = Path(__file__).resolve().parents[2]
FLOWERCONFIG = ROOT / "prismatic_celery" / "observability" / "flower" / "flowerconfig.py"
IN_CI = bool(os.environ.get("CI"))
HOST = "127.0.0.1"
USER, PASSWORD = "ops", "s3cret"
pytestmark = pytest.mark.integration

CONF: dict[str, Any] = {
    "prismatic_backoff_initial_s": 0.1, "prismatic_backoff_max_s": 0.1, "prismatic_backoff_jitter_s": 0,
    "prismatic_remediation_rules": [{"name": "fast", "match": {"exceptions": ["ConnectionError"]},
                                     "action": "restart_child"}],
    "prismatic_domain_budget": {"max_restarts": 2, "period_s": 60},
    "prismatic_supervisor_budget": {"max_restarts": 1, "period_s": 300},
    "prismatic_cooldown_initial_s": 1, "prismatic_cooldown_max_s": 120,
    "prismatic_max_restarts_per_message": 50,
    # dep: the circuit tests/apps/basic.py's call_dep task declares; payments: the one this run opens
    "prismatic_circuits": {"dep": {"fail_max": 3, "reset_timeout_s": 2}, "payments": {"fail_max": 3}},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def get(url: str, *, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """GET on 127.0.0.1 (never through a proxy): status and body."""
    assert url.startswith(f"http://{HOST}:"), url
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def answers(url: str) -> bool:
    try:
        return get(url)[0] < 500
    except OSError:
        return False


class Service:
    """A long-running ``celery -A tests.apps.basic ...`` subprocess (Flower, the exporter)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="prismatic-svc-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tests.apps.basic", *args], cwd=ROOT,
                                     env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)  # read only while it runs


@dataclass
class LiveRun:
    env: dict[str, str]
    worker: str
    flower: str
    exporter: str
    namespace: str
    dark_flower: str  # a Flower whose store does not answer


@pytest.fixture(scope="module")
def live(real_redis: str) -> Iterator[LiveRun]:
    """One live run shared by this module's tests (its state is stable for two minutes), on a leased database."""
    with leased_db(real_redis) as broker:
        yield from _live(broker)


def _live(broker: str) -> Iterator[LiveRun]:
    flush = redis.Redis.from_url(broker)
    namespace = "flowertest"
    env = {"BASIC_BROKER_URL": broker, "BASIC_NAMESPACE": namespace, "PYTHONPATH": str(ROOT),
           "BASIC_CONF": json.dumps(CONF)}
    app = make_app(broker, namespace, **CONF)
    host = f"flower-{namespace}@test"
    flower_port, exporter_port, dark_port = free_port(), free_port(), free_port()
    dark_env = {**env, "BASIC_STORE_URL": f"redis://:s3cret@{HOST}:{free_port()}/0"}  # nothing listens there
    services: list[Service] = []
    worker = WorkerProcess("tests.apps.basic", hostname=host, pool="prefork", concurrency=2, env=env, cwd=ROOT)
    try:
        worker.start()
        services.append(Service(["flower", f"--conf={FLOWERCONFIG}", f"--port={flower_port}", f"--address={HOST}",
                                 f"--basic-auth={USER}:{PASSWORD}"], env))
        services.append(Service(["supervision", "exporter", "--port", str(exporter_port)], env))
        services.append(Service(["flower", f"--conf={FLOWERCONFIG}", f"--port={dark_port}", f"--address={HOST}",
                                 f"--basic-auth={USER}:{PASSWORD}"], dark_env))
        worker.wait_ready(app)
        # Given: every osint message fails (a bad deploy) until its second budget overrun escalates it
        # (cool-down of 120 s)
        failing = [app.tasks["basic.fetch_fail"].apply_async((f"bad deploy {i}",), queue="sources")
                   for i in range(160)]
        wait_for(lambda: flush.get(Keys(namespace).key("escalation", "osint")) is not None, timeout_s=30,
                 message="osint escalated")
        # and an operator paused telemetry, and the payments circuit is open
        paused = subprocess.run([sys.executable, "-m", "celery", "-A", "tests.apps.basic", "control",
                                 "supervision_pause", "telemetry", "120", "-d", host, "-t", "5"], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
        assert paused.returncode == 0, paused.stderr
        from prismatic_celery.runtime import get_runtime

        runtime = get_runtime(app)
        assert runtime is not None
        runtime.circuits.open_for("payments", 120_000)
        flower = f"http://{HOST}:{flower_port}"
        exporter = f"http://{HOST}:{exporter_port}"
        dark = f"http://{HOST}:{dark_port}"
        for url, service in ((f"{flower}/healthcheck", services[0]), (f"{exporter}/metrics", services[1]),
                             (f"{dark}/healthcheck", services[2])):
            try:
                wait_for(lambda u=url: answers(u), timeout_s=20, interval_s=0.2, message=url)  # type: ignore[misc]
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{service.output()}") from None
        yield LiveRun(env=env, worker=host, flower=flower, exporter=exporter, namespace=namespace, dark_flower=dark)
        for result in failing:
            result.revoke()
    finally:
        for service in services:
            service.stop()
        worker.stop()
        flush.close()


def run_celery(live: LiveRun, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tests.apps.basic", *args], cwd=ROOT,
                          env={**os.environ, **live.env}, capture_output=True, text=True, timeout=30)


def from_metrics(text: str) -> dict[str, Any]:
    """The comparable numbers, read back from a Prometheus exposition."""
    values: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    restarts: dict[str, dict[str, int]] = {}
    for labels, value in values["prismatic_restarts_total"]:
        restarts.setdefault(labels["child"], {})["total"] = int(value)
    for labels, value in values["prismatic_restarts_in_window"]:
        restarts.setdefault(labels["child"], {})["in_window"] = int(value)
    return {
        "score": int(values["prismatic_health_score"][0][1]),
        "state": next(labels["state"] for labels, value in values["prismatic_health_state"] if value == 1),
        "restarts": restarts,
        "hotspots": sorted(labels["child"] for labels, value in values["prismatic_hotspot"] if value == 1),
        "circuits": {labels["circuit"]: labels["state"] for labels, value in values["prismatic_circuit_state"]
                     if value == 1},
        "paused": sorted(labels["child"] for labels, value in values["prismatic_child_paused"] if value == 1),
        "paused_reasons": {labels["reason"]: int(value) for labels, value in values["prismatic_paused_children"]
                           if value},
        "escalated": sorted(labels["domain"] for labels, value in values["prismatic_domain_escalated"] if value == 1),
    }


def comparable(health: dict[str, Any]) -> dict[str, Any]:
    """What a Prometheus exposition can say of a health report."""
    numbers = summary_numbers(health)
    reasons: dict[str, int] = {}
    for _, reason in numbers["paused"]:
        reasons[reason] = reasons.get(reason, 0) + 1
    return {**numbers, "paused": sorted(child for child, _ in numbers["paused"]), "paused_reasons": reasons}


def test_cli_inspect_flower_page_api_and_metrics_report_the_same_numbers(live: LiveRun) -> None:
    """Done when: one live run, six surfaces, the same numbers."""
    cli = run_celery(live, "supervision", "health", "--json")
    assert cli.returncode == 2, f"escalated: exit 2\n{cli.stderr}"
    from_cli = json.loads(cli.stdout)
    expected = summary_numbers(from_cli)
    assert expected["state"] == "escalated" and expected["escalated"] == ["osint"]
    assert expected["circuits"]["payments"] == "open"
    assert ("telemetry", "manual") in expected["paused"]
    assert {("sources", "escalated"), ("monitor", "escalated")} <= set(expected["paused"])
    assert expected["hotspots"] == ["sources"] and expected["restarts"]["sources"]["total"] >= 6
    # 100 - 40 (escalated) - 15 (open circuit) - 10 (hotspot) - 5 (telemetry) - restarts in window
    assert expected["score"] == 30 - expected["restarts"]["sources"]["in_window"]

    inspected = run_celery(live, "inspect", "supervision_health", "--json", "-d", live.worker, "-t", "5")
    assert inspected.returncode == 0, inspected.stderr
    compact = json.loads(inspected.stdout)[live.worker]
    assert {k: compact[k] for k in ("score", "state", "escalated", "hotspots", "circuits")} == \
        {k: expected[k] for k in ("score", "state", "escalated", "hotspots", "circuits")}
    assert sorted((p["child"], p["reason"]) for p in compact["paused"]) == expected["paused"]

    status, body = get(f"{live.flower}/api/supervision", auth=(USER, PASSWORD))
    assert status == 200, body
    api = json.loads(body)
    assert summary_numbers(api) == expected

    status, page = get(f"{live.flower}/supervision?refresh=0", auth=(USER, PASSWORD))
    assert status == 200
    assert f'id="health-score">{expected["score"]}<' in page
    assert 'data-child="telemetry" data-state="paused"' in page
    assert 'data-circuit="payments" data-state="open"' in page

    metrics = comparable(from_cli)
    status, flower_metrics = get(f"{live.flower}/metrics")
    assert status == 200 and "flower_" in flower_metrics, "Flower's own /metrics, with Flower's own metrics"
    assert from_metrics(flower_metrics) == metrics
    status, exported = get(f"{live.exporter}/metrics")
    assert status == 200
    assert from_metrics(exported) == metrics


def test_the_page_and_the_api_are_behind_flowers_auth(live: LiveRun) -> None:
    """With --basic-auth, no or wrong credentials get 401."""
    for path in ("/supervision", "/api/supervision"):
        assert get(f"{live.flower}{path}")[0] == 401, path
        assert get(f"{live.flower}{path}", auth=(USER, "wrong"))[0] == 401, path
        assert get(f"{live.flower}{path}", auth=(USER, PASSWORD))[0] == 200, path


# -- the browser ------------------------------------------------------------------------------------

PAUSED_RGB = (0xFF, 0xAA, 0x00)  # .ps-paused in the page's stylesheet
OPEN_RGB = (0xCC, 0x00, 0x33)  # .ps-open


def png_pixels(data: bytes) -> list[tuple[int, int, int]]:
    """RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    channels = 4 if color == 6 else 3
    raw, stride = zlib.decompress(idat), width * channels
    pixels: list[tuple[int, int, int]] = []
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 0xFF
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, channels))  # type: ignore[misc]
        previous = line
    return pixels


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Debian Chromium through Selenium, logged in to Flower's basic auth; skipped (failed in CI) when
    missing."""
    paths = chromium_paths()
    if paths is None:
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if IN_CI:
            pytest.fail(f"{message} (CI is set: the browser test must run)")
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError:
        if IN_CI:
            pytest.fail("selenium is not installed (dev extra)")
        pytest.skip("selenium is not installed (dev extra)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look anything up
    browser, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(driver_path), options=options)
    try:
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {credentials}"}})
        yield driver
    finally:
        driver.quit()


def test_headless_chromium_shows_the_paused_child_and_the_open_circuit(
    live: LiveRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real browser renders /supervision; the screenshot shows the paused badge and the open-circuit badge."""
    from selenium.webdriver.common.by import By

    with chromium(tmp_path, monkeypatch) as driver:
        driver.get(f"{live.flower}/workers")  # Flower's own page: its navigation links to the supervision page
        link = driver.find_element(By.CSS_SELECTOR, "nav .app-nav a[data-prismatic-nav]")
        assert link.text == "Supervision" and link.get_attribute("aria-current") is None
        primary = driver.find_element(By.CSS_SELECTOR, "nav ul.app-nav")  # Workers, Tasks, Broker, then ours
        assert [a.text for a in primary.find_elements(By.CSS_SELECTOR, "a.nav-link")] == [
            "Workers", "Tasks", "Broker", "Supervision"]
        link.click()
        wait_for(lambda: driver.title.startswith("Supervision"), timeout_s=15, message="the supervision page")
        current = driver.find_element(By.CSS_SELECTOR, "nav .app-nav a[data-prismatic-nav]")
        assert current.get_attribute("aria-current") == "page" and "active" in str(current.get_attribute("class"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#events-table tbody tr")
        assert rows, "events are a table"
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#events-table thead th")]
        assert headers[:6] == ["Time", "Type", "Domain", "Child", "Task", "Exception"]
        assert "=" not in rows[0].find_element(By.CSS_SELECTOR, "td.ps-details").text, "no raw key=value text"
        driver.get(f"{live.flower}/supervision?refresh=0")
        assert driver.title.startswith("Supervision"), driver.page_source[:500]
        child = driver.find_element(By.CSS_SELECTOR, 'tr.ps-child[data-child="telemetry"]')
        circuit = driver.find_element(By.CSS_SELECTOR, 'tr[data-circuit="payments"]')
        assert "PAUSED" in child.text and "manual" in child.text
        assert "OPEN" in circuit.text
        assert driver.find_element(By.ID, "health-state").text == "ESCALATED"
        screenshot = tmp_path / "supervision.png"
        assert driver.save_screenshot(str(screenshot))
        child_shot, circuit_shot = child.screenshot_as_png, circuit.screenshot_as_png
    artifacts = os.environ.get("PRISMATIC_ARTIFACTS")  # keep the screenshot for people, when asked
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / screenshot.name)
    page = png_pixels(screenshot.read_bytes())
    assert page.count(PAUSED_RGB) > 200, f"no paused badge in {screenshot}"
    assert page.count(OPEN_RGB) > 200, f"no open-circuit badge in {screenshot}"
    assert png_pixels(child_shot).count(PAUSED_RGB) > 100, "the telemetry row shows the paused badge"
    assert png_pixels(circuit_shot).count(OPEN_RGB) > 100, "the payments row shows the open badge"


def test_a_flower_whose_store_does_not_answer_says_unknown_in_the_browser_and_in_metrics(
    live: LiveRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is down for this Flower: the page shows the unknown banner, no score and every child unknown;
    its /metrics has store_up 0, health_state unknown and no score sample; the password is never shown."""
    from selenium.webdriver.common.by import By

    status, text = get(f"{live.dark_flower}/metrics", auth=(USER, PASSWORD))
    assert status == 200 and 'prismatic_store_up{namespace="flowertest"} 0.0' in text, text[:2000]
    assert 'prismatic_health_state{namespace="flowertest",state="unknown"} 1.0' in text
    assert "prismatic_health_score{" not in text
    with chromium(tmp_path, monkeypatch) as driver:
        driver.get(f"{live.dark_flower}/supervision?refresh=0")
        banner = driver.find_element(By.ID, "store-unknown")
        assert banner.is_displayed() and "does not answer" in banner.text and "s3cret" not in driver.page_source
        assert driver.find_element(By.ID, "health-state").text == "UNKNOWN"
        assert driver.find_element(By.ID, "health-score").text == "?"
        states = {row.get_attribute("data-state") for row in driver.find_elements(By.CSS_SELECTOR, "tr.ps-child")}
        assert states == {"unknown"}
