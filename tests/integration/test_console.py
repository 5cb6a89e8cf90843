"""The console in a real headless Chromium (Debian's, driven by Selenium through Debian's
chromedriver): each page loads without console errors, its charts draw, its numbers are the
usage API's, and a screenshot of each lands in var/test-output/console/ for a person."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
SHOTS = ROOT / "var" / "test-output" / "console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "`make browser` installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> None:
    """Requests on two backends, one error, and scored requests of experiment `ab`."""
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        for model in ("echo", "echo", "coder", "no-such-model"):
            client.post("/chat/completions", json={"model": model, "max_tokens": 4,
                        "messages": [{"role": "user", "content": "one two"}]})  # fmt: skip
        for score in (5, 4, 5, 2, 1, 2, 4, 5):
            answer = client.post("/chat/completions", json={"model": "ab-route", "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            request_id = answer.headers["x-request-id"]
            client.post("/feedback", json={"request_id": request_id, "score": score})


def visit(browser: Any, stack: Stack, path: str, shot: str) -> Any:
    from selenium.webdriver.common.by import By

    browser.get(stack.root_url + path)
    assert browser.find_element(By.TAG_NAME, "h1").text
    browser.save_screenshot(str(SHOTS / f"{shot}.png"))
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe  # no console errors: failed loads, blocked resources
    return By


def test_overview_shows_backends_routes_totals_and_errors(
    browser: Any, stack: Stack, traffic: None
) -> None:
    By = visit(browser, stack, "/console", "overview")
    backends = [row.text.split()[0] for row in browser.find_elements(
        By.CSS_SELECTOR, "table.backends tbody tr")]  # fmt: skip
    assert {"tiny", "upstream", "echo", "claude"} <= set(backends)
    routes = browser.find_element(By.CSS_SELECTOR, "table.routes").text
    assert "failover" in routes and "flaky" in routes
    usage = httpx.get(f"{stack.base_url}/gateway/usage?since=24h").json()["data"]
    shown = browser.find_element(By.CSS_SELECTOR, "[data-total=requests]").text
    assert int(shown.replace(",", "")) == sum(row["requests"] for row in usage)
    assert "model_not_found" in browser.find_element(By.CSS_SELECTOR, "table.errors").text


@pytest.mark.parametrize("by", ["backend", "route"])
def test_usage_charts_draw_and_match_the_usage_api(
    browser: Any, stack: Stack, traffic: None, by: str
) -> None:
    By = visit(browser, stack, f"/console/usage?by={by}&since=24h", f"usage-by-{by}")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 3
    assert all(chart.find_elements(By.TAG_NAME, "rect") for chart in charts)  # bars drawn
    assert all(chart.size["height"] > 50 for chart in charts)  # and laid out
    api = httpx.get(f"{stack.base_url}/gateway/usage?group_by={by}&since=24h").json()["data"]
    table = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "table.totals tbody tr"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        table[cells[0]] = int(cells[1])
    assert table == {str(row[by]) if row[by] is not None else "-": row["requests"] for row in api}


def test_experiments_show_the_verdict_and_the_interval_chart(
    browser: Any, stack: Stack, traffic: None
) -> None:
    By = visit(browser, stack, "/console/experiments", "experiments")
    section = browser.find_element(By.CSS_SELECTOR, "section.experiment")
    assert section.find_element(By.TAG_NAME, "h2").text == "ab"
    assert section.find_element(By.CSS_SELECTOR, ".verdict").text
    dots = section.find_elements(By.CSS_SELECTOR, "svg.chart circle")
    assert len(dots) >= 1  # one per arm with scored requests


def test_pages_send_no_script_and_a_strict_policy(stack: Stack) -> None:
    page = httpx.get(f"{stack.root_url}/console")
    assert page.status_code == 200 and "<script" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    css = httpx.get(f"{stack.root_url}/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
