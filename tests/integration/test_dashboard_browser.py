"""A real browser opens the report: Debian's headless Chromium, driven by its chromedriver.

Needs ``apt-get install -y chromium chromium-driver`` (CI installs them) and selenium; no
driver or browser is ever downloaded (Selenium Manager is bypassed by giving both paths).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from dashboards.fake import MemorySource, synthetic_sweep
from dashboards.report import write_report
from tests.browser import browser as _browser

pytestmark = pytest.mark.integration


def _report(tmp_path: Path) -> Path:
    src = MemorySource()
    synthetic_sweep(src, "sw", methods=("dense", "static", "set", "rigl"),
                    distributions=("uniform", "erk"), delta_ts=(50, 100), seeds=(0, 1))  # fmt: skip
    lost = src.runs["sw"][3]
    src.runs["sw"][3] = type(lost)(**{**lost.__dict__, "status": "FAILED", "error": "<oops> & co"})
    return write_report(src, ["sw"], tmp_path / "report").index


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            # chrome://: the browser's own pages; data: the heatmaps' pixels, inline in the SVG
            if not url.startswith(("chrome", "data:")):
                urls.append(url)
    return urls


def _full_page(driver) -> Image.Image:
    """The whole page, not only the viewport (DevTools' captureBeyondViewport)."""
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")


def test_the_report_opens_without_console_errors_and_is_not_blank(tmp_path):
    index = _report(tmp_path)
    with _browser(tmp_path) as driver:
        driver.set_window_size(1400, 1000)
        _requests(driver)  # drain what the browser's own start page loaded
        driver.get(index.as_uri())
        assert driver.title.startswith("RigL sweeps: sw")
        svgs = driver.find_elements("css selector", "figure svg")
        assert len(svgs) == 7
        assert all(svg.size["width"] > 300 and svg.size["height"] > 150 for svg in svgs)
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        # self-contained: the page itself is the only thing loaded
        assert [u for u in _requests(driver) if u != index.as_uri()] == []
        shot = _full_page(driver)
    shot.save(tmp_path / "report.png")
    pixels = shot.getcolors(maxcolors=1 << 24)
    assert len(pixels) > 50  # figures, not a blank page
    white = max(count for count, colour in pixels if colour == (255, 255, 255))
    assert white < 0.97 * shot.width * shot.height


def test_the_report_renders_inside_a_sandboxed_frame_like_mlflows_artifact_view(tmp_path):
    index = _report(tmp_path)
    frame = tmp_path / "frame.html"
    # MLflow shows an .html artifact in <iframe sandbox="allow-scripts"> from a blob URL
    frame.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><iframe sandbox="allow-scripts" '
        f'style="width:1380px;height:3000px;border:0" srcdoc="{html.escape(index.read_text())}">'
        "</iframe></body></html>"
    )
    with _browser(tmp_path) as driver:
        driver.set_window_size(1400, 1200)
        driver.get(frame.as_uri())
        driver.switch_to.frame(0)
        assert len(driver.find_elements("css selector", "figure svg")) == 7
        driver.switch_to.default_content()
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    shot.save(tmp_path / "framed.png")
    assert len(shot.getcolors(maxcolors=1 << 24)) > 50
