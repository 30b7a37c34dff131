"""A real browser for the tests: Debian's headless Chromium, driven by its chromedriver.

Needs ``apt-get install -y chromium chromium-driver`` (CI installs them) and selenium; no
driver or browser is ever downloaded (Selenium Manager is bypassed by giving both paths).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from tests.support import descendants

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip


def _binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install it with `apt-get install -y chromium chromium-driver`"
    return path


@contextlib.contextmanager
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=_binary("chromedriver"), log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    ours = [service.process.pid, *descendants(service.process.pid)]
    try:
        yield driver
    finally:
        driver.quit()
        for pid in ours:  # only what this test started, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
