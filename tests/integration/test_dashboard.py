"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

The page must load with no console errors, show a resource going down within a few seconds
of the health monitor recording it, and leave a screenshot as a test artifact
(``$SHADOWDNS_TEST_ARTIFACTS``, default ``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadowdns.allocator.planner import reason_text
from shadowdns.store import (
    DemandRow,
    Forecast,
    ForecastPoint,
    HealthState,
    ModelChoice,
    NewAllocation,
    open_store,
)
from tests.unit.api.support import ServedApi, served_api

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="Debian's chromium and chromium-driver are not installed")
ROOT = Path(__file__).resolve().parents[2]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1440,900")


def artifacts() -> Path:
    path = Path(os.environ.get("SHADOWDNS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="shadowdns-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, css: str, timeout: float) -> float:
    """Seconds until an element matching `css` is on the page."""
    from selenium.webdriver.common.by import By

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if driver.find_elements(By.CSS_SELECTOR, css):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"nothing matches {css} after {timeout} s")


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "ERROR")]


def mark_down(served: ServedApi, resource: str) -> None:
    """What the health monitor does when probes fail: record the state in the store."""
    store = open_store(str(served.state))
    try:
        now = time.time()
        store.set_health_state(HealthState(resource, "up", now - 120, "probe ok"))
        store.set_health_state(HealthState(resource, "down", now, "3 probes failed (test)"))
    finally:
        store.close()


def test_dashboard_shows_a_resource_going_down(tmp_path: Path, browser: Any) -> None:
    """Loads clean, lists every resource up, then shows web-eu-1 down within a few seconds."""
    with served_api(tmp_path) as served:
        browser.get(f"{served.url}/#token={served.tokens['reader']}")
        wait_for(browser, '.card[data-resource="web-eu-1"][data-state="up"]', 15)
        wait_for(browser, '#shadows tr[data-region="ap-east"]', 5)
        assert "token=" not in browser.current_url  # the secret leaves the address bar
        mark_down(served, "web-eu-1")
        seconds = wait_for(browser, '.card[data-resource="web-eu-1"][data-state="down"]', 10)
        assert seconds < 5
        wait_for(browser, '#events tr[data-resource="web-eu-1"]', 5)
        browser.save_screenshot(str(artifacts() / "dashboard.png"))
        assert console_errors(browser) == []


def test_dashboard_without_a_token_asks_for_one(tmp_path: Path, browser: Any) -> None:
    """With no token the page shows the sign-in form, still without console errors."""
    with served_api(tmp_path) as served:
        browser.get(served.url + "/")
        wait_for(browser, "#login:not([hidden])", 10)
        assert console_errors(browser) == []


def seed_forecast_history(served: ServedApi, di: str, region: str, now: float) -> int:
    """Two hours of demand, a forecast made an hour ago and the newest one, the model in use
    and a ready shadow allocated on the forecast, as the allocator records them; returns
    the first past bucket forecast."""
    store = open_store(str(served.state))
    step = 300
    bucket = int(now // step * step)
    try:
        store.add_demand([DemandRow(di, region, bucket - 60 * (i + 1), "primary", 3 + i % 7)
                          for i in range(120)])
        store.rollup(now)
        old = bucket - 3600
        store.write_forecasts([Forecast(di, region, "5m", old, "ets", tuple(
            ForecastPoint(old + i * step, 20.0 + i, 30.0 + i) for i in range(1, 13)))])
        store.write_forecasts([Forecast(di, region, "5m", bucket, "ets", tuple(
            ForecastPoint(bucket + i * step, 25.0, 40.0) for i in range(6)))])
        store.write_model_choices([ModelChoice(di, region, "ets", 0.8, old)])
        store.add_allocations([NewAllocation(
            di, "sb-ap-1", region, bucket - 1800, 1, bucket - 1800, "ready",
            reason=reason_text(why="forecast", predicted=31.5, observed=9.0, model="ets",
                               threshold=20.0, p_cross=0.7))])
    finally:
        store.close()
    return old + step


def allocator_off(zones: Path) -> None:
    (zones / "allocator.yaml").write_text("allocator: {mode: off}\n")


def test_forecast_panel_shows_past_forecasts_threshold_model_and_shadow_spans(
        tmp_path: Path, browser: Any) -> None:
    """For a DI and region the panel draws the actuals, what was forecast for past buckets
    and the newest forecast with its band, the DI's threshold, and each shadow's span with
    its reason; the model in use is named. The API serves the same (past points kept)."""
    from selenium.webdriver.common.by import By

    di, region = "app.demo.shadowdns.test.", "ap-east"
    with served_api(tmp_path, prepare=allocator_off) as served:
        first_past = seed_forecast_history(served, di, region, time.time())
        browser.get(f"{served.url}/#token={served.tokens['reader']}")
        wait_for(browser, '#forecast-allocations tr[data-state="ready"]', 15)
        wait_for(browser, "#forecast-chart canvas", 5)
        info = browser.find_element(By.ID, "forecast-info").text
        assert "model in use: ets" in info and "threshold 20" in info, info
        row = browser.find_element(By.CSS_SELECTOR, '#forecast-allocations tr[data-state]')
        assert "sb-ap-1" in row.text
        assert "forecast · model ets · predicted 31.5 · observed 9" in row.text, row.text
        legend = browser.find_element(By.CSS_SELECTOR, "#forecast-chart .u-legend").text
        for label in ("actual", "forecast", "upper", "threshold"):
            assert label in legend, legend
        browser.save_screenshot(str(artifacts() / "dashboard-forecast.png"))
        assert console_errors(browser) == []

        [series] = httpx.get(f"{served.url}/api/v1/forecasts", params={"di": di},
                             headers=served.auth("reader")).json()
        assert series["threshold"] == 20 and series["model"] == "ets"
        assert series["points"][0]["ts"] == first_past  # forecast an hour ago, kept
        assert series["recent_error"] is not None
        assert len(series["actual"]) >= 20
