"""Debian's headless Chromium, driven through its chromedriver (selenium never downloads one).

`browser` is a fixture (tests/integration/conftest.py offers it to every module there); the
driver and every process it started are ended when the test ends (as psutil processes, so a
reused pid is never hit).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)  # a driver path: selenium never downloads one
    driver = webdriver.Chrome(service=service, options=options)
    # psutil.Process objects, not bare pids: kill() checks the process is still the same one
    driver_process = psutil.Process(service.process.pid)
    procs = {p.pid: p for p in [driver_process, *driver_process.children(recursive=True)]}
    try:
        yield driver
    finally:
        try:  # the renderers and helpers started since, too
            for child in driver_process.children(recursive=True):
                procs.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        try:
            driver.quit()
        finally:
            for proc in procs.values():  # whatever quit() left running
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def wait(driver: Any, check: Any, what: str, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: check(d), message=f"waiting for {what}"
    )
