"""Open report.html in real headless Chromium: it renders (non-blank, images drawn), logs no
console messages and makes no network request. A deliberately bad page is the control that
proves the console/network checks can fail on this Chromium version."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from reslab.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars"]
TIMEOUT_S = 60
CONSOLE = re.compile(r"CONSOLE|Uncaught")


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium binary on PATH")


def _builders():
    # Reuse the contract-following fake directories of test_report.py without a conftest.
    spec = importlib.util.spec_from_file_location("_report_builders",
                                                  Path(__file__).with_name("test_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [_browser(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _load(page: Path, tmp: Path) -> tuple[str, list[str], list[str]]:
    """(DOM after load, console lines, URLs the page itself asked the network stack for)."""
    netlog = tmp / "net.json"
    proc = _chromium(page, tmp, "--dump-dom", "--enable-logging=stderr", "--v=0",
                     f"--log-net-log={netlog}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if CONSOLE.search(line)]
    return proc.stdout, console, _page_requests(netlog)


def _page_requests(netlog: Path) -> list[str]:
    # Chromium's own background traffic (updater, accounts) runs outside the page's network
    # isolation key; requests made by a file:// page carry a file:// key.
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "file://" in e["params"].get("network_isolation_key", "")]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    _browser()
    run_dir = _builders().make_run_dir(tmp_path_factory.mktemp("browser"))
    return write_report(run_dir)[0]


def test_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    proc = _chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
    assert shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2000)
    assert max(ImageStat.Stat(image).stddev) > 20  # not one flat colour
    # The embedded plots really drew: saturated (coloured line/heatmap) pixels are present.
    saturation = image.convert("HSV").getchannel("S")
    assert sum(saturation.histogram()[121:]) > 5000


def test_dom_console_and_network(report, tmp_path):
    dom, console, requests = _load(report, tmp_path)
    for heading in ("resnet20-digits", "Config", "Summary", "Learning curves",
                    "Confusion matrix", "Per-class accuracy", "Misclassified examples",
                    "Robustness"):
        assert re.search(rf"<h[12][^>]*>{re.escape(heading)}</h[12]>", dom), heading
    assert console == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    urls = re.findall(r'\s(?:src|href|srcset)="([^"]*)"', dom)
    assert urls and all(u.startswith(("data:", "#")) for u in urls), urls


def test_checks_catch_a_bad_page(tmp_path):
    """Control: a console error and an external request must be seen (port 9 on localhost
    refuses at once, so nothing leaves the machine)."""
    _browser()
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><h1>bad</h1><script>console.error("boom");</script>'
                    '<img src="http://127.0.0.1:9/x.png">')
    _, console, requests = _load(page, tmp_path)
    assert any("boom" in line for line in console)
    assert "http://127.0.0.1:9/x.png" in requests
