"""The dashboard in a real headless browser (Debian's chromium): it loads, its charts have data,
the user lookup works, and nothing reaches the browser's console as an error."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streamrec import experiments
from streamrec.bench.report import plt
from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store
from streamrec.training.continual import run_update, train_and_register

CHROMIUM = shutil.which("chromium")
CHARTS = ("rate", "lag", "versions", "cost", "experiment", "online")
KEY = "dashboard-test-key"
# scripts/install_servers.sh (run by `make test`) installs chromium; elsewhere the test says why it skips.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium (scripts/install_servers.sh installs it)"
)


def home_with_history(home: Path) -> None:
    """Two versions (a fit and a guarded update), a running experiment between them."""
    stream = generate(StreamConfig(users=40, items=60, events=1600, seed=4))
    schema = EventSchema()
    events = [schema.validate(event) for event in stream.events()]
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append(events[:1200])
    settings = Home(home, Settings())
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)
    train_and_register(settings, config, text_model="all-MiniLM-L6-v2", progress=False)
    with open_store(home) as store:
        store.log.append(events[1200:])
    run_update(settings, progress=False)
    versions = [v.version for v in settings.registry.versions()]
    experiments.start(settings.registry, versions[0], versions[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_dashboard_loads_draws_its_charts_and_looks_a_user_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home_with_history(home)
    plots = tmp_path / "plots"  # a benchmark's plot, as `streamrec bench` writes one
    plots.mkdir()
    figure, axes = plt.subplots(figsize=(3, 2))
    axes.plot([0, 1, 2], [1, 3, 2])
    figure.savefig(plots / "bench-example.png")
    plt.close(figure)
    (plots / "notes.txt").write_text("not a plot")
    port = free_port()
    env = {**os.environ, "STREAMREC_API_KEY": KEY, "STREAMREC_SERVER__PLOTS_DIR": str(plots)}
    command = [
        sys.executable,
        "-m",
        "streamrec.cli",
        "serve",
        "--home",
        str(home),
        "--port",
        str(port),
        "--no-worker",
    ]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        admin = {"X-API-Key": KEY}
        assert httpx.get(f"{base}/dashboard/data").status_code == 401  # the data needs the key
        assert httpx.get(f"{base}/dashboard/plots/bench-example.png").status_code == 401
        for name in ("notes.txt", "missing.png", "..%2Fserver.log"):  # only listed plots are served
            refused = httpx.get(f"{base}/dashboard/plots/{name}", headers={"X-API-Key": KEY})
            assert refused.status_code in (404, 422), (name, refused.status_code)
        for user in ("u1", "u2", "u3", "u4"):
            answer = httpx.get(f"{base}/recommend/{user}", headers=admin).json()
            click = {"user_id": user, "item_id": answer["items"][0]["item_id"], "event_type": "click",
                     "request_id": answer["request_id"]}  # fmt: skip
            assert httpx.post(f"{base}/events", json=[click], headers=admin).status_code == 200
        time.sleep(0.5)  # the impressions are written every 0.2 s

        console = look_at_dashboard(f"{base}/dashboard#key={KEY}", tmp_path / "dashboard.png")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    assert console == [], console
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("STREAMREC_DASHBOARD_SCREENSHOT")  # where a run may keep the screenshot
    if keep:
        shutil.copyfile(tmp_path / "dashboard.png", keep)


def look_at_dashboard(url: str, screenshot: Path) -> list[str]:
    """Load the page, check its charts and the lookup; what reached the console as an error."""
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: console.append(str(error)))
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready === 'yes'", timeout=30_000)
        points = {name: int(page.get_attribute(f"#{name}", "data-points") or -1) for name in CHARTS}
        assert points["rate"] >= 1 and points["lag"] >= 1, points
        assert points["versions"] == points["cost"] == 2, points  # the fit and the update
        assert points["experiment"] == 2 and points["online"] >= 1, points  # two arms; CTR per version
        assert page.inner_text("#errors").strip() == ""
        assert page.locator("#plots img").count() == 1
        assert page.eval_on_selector("#plots img", "image => image.naturalWidth") > 100  # decoded
        page.fill("#user", "u1")
        page.click("#lookup button")
        page.wait_for_selector("#user-recs tr", timeout=30_000)
        assert page.locator("#user-recs tr").count() == 10 and page.locator("#user-recent tr").count() >= 1
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return console
