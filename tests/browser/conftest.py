"""Headless Chromium for the dashboard test: Debian's ``chromium`` and ``chromium-driver``, driven by Selenium.

Selenium never downloads anything: the driver path and the browser binary are given explicitly
(``/usr/bin/chromedriver``, ``/usr/bin/chromium``; override with ``HOOKLINE_CHROMEDRIVER`` and
``HOOKLINE_CHROMIUM``) and ``SE_OFFLINE`` forbids Selenium Manager's downloads.

Without them the browser test is skipped, loudly (a warning, and a banner at the end of the run);
with ``HOOKLINE_REQUIRE_BROWSER=1`` (``.ci/run`` sets it) the missing browser is a failure instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".hookline" / "artifacts"
_skipped: list[str] = []


def _browser_paths() -> tuple[str | None, str | None, str]:
    driver = os.environ.get("HOOKLINE_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    browser = os.environ.get("HOOKLINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    missing = [p for p in (driver, browser) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    why = ", ".join(missing)
    return (None, None, why) if missing else (driver, browser, "")


@pytest.fixture
def chrome(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium WebDriver (sync API: call it from a thread when the server runs in the test loop)."""
    driver_path, browser_path, missing = _browser_paths()
    if driver_path is None or browser_path is None:
        message = (
            f"BROWSER TEST SKIPPED: {missing} not found. Install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver) to run the dashboard test."
        )
        if os.environ.get("HOOKLINE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " HOOKLINE_REQUIRE_BROWSER=1 makes this a failure.", pytrace=False)
        warnings.warn(message, stacklevel=1)
        _skipped.append(message)
        pytest.skip(message)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # driver.get_log("browser"): the console
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        with contextlib.suppress(Exception):  # the test may have quit it already
            driver.quit()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for message in _skipped:
        terminalreporter.write_sep("!", message, yellow=True, bold=True)
