"""The MLflow UI's chart view plots eval_accuracy against cumulative_train_flops: the loop
logs both at the same steps, so the line chart's "Metric" x-axis can be the FLOPs. A real
`mlflow server` over a seeded store, driven in headless Chromium like a researcher would
(expand the sweep, Add chart → Line chart, X-axis Metric = cumulative_train_flops, Y-axis
eval_accuracy); the screenshot is kept in the test's tmp_path as chart_view.png."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from dashboards.synthetic import record_sweep
from orchestrator.tracking.ledger import MlflowLedger
from orchestrator.tracking.server import tracking_server
from tests.integration.test_dashboard_browser import _browser

pytestmark = pytest.mark.integration


def _wait(find, what: str, timeout: float = 30.0):
    """The first displayed element ``find()`` returns, waiting for the page's scripts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in find() if e.is_displayed()]
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"the MLflow UI never showed {what} within {timeout:.0f} s")


def _choose(driver, opener, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).move_to_element(opener).click().perform()
    ActionChains(driver).send_keys(text).perform()
    time.sleep(1)  # the select filters its options as one types
    ActionChains(driver).send_keys(Keys.ENTER).perform()


def test_chart_view_plots_accuracy_against_training_flops(tmp_path, monkeypatch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    grid = ["method=rigl,static", "sparsity=0.8,0.95", "train.steps=1000"]
    with contextlib.ExitStack() as stack:
        uri = stack.enter_context(tracking_server())
        ledger = MlflowLedger(uri)
        record_sweep(ledger, "chart", "chart-sweep", grid, eval_every=100)
        experiment = ledger.find_sweep("chart-sweep").experiment_id
        driver = stack.enter_context(_browser(tmp_path))
        driver.set_window_size(1600, 1100)
        driver.get(f"{uri}/#/experiments/{experiment}/runs?compareRunsMode=CHART")
        css = "button[data-component-id*='runnamecellrenderer']"  # the sweep's expander
        [expand] = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, css), "the sweep run")
        ActionChains(driver).move_to_element(expand).click().perform()
        path = "//button[normalize-space(.)='Add chart']"
        add = _wait(lambda: driver.find_elements(By.XPATH, path), "Add chart")[0]
        ActionChains(driver).move_to_element(add).click().perform()
        items = "//*[@role='menuitem'][normalize-space(.)='Line chart']"
        line = _wait(lambda: driver.find_elements(By.XPATH, items), "Line chart")[0]
        ActionChains(driver).move_to_element(line).click().perform()
        radio = "input[name='runs-charts-field-group-x-axis'][value='metric']"
        driver.execute_script("arguments[0].click()", driver.find_element(By.CSS_SELECTOR, radio))
        x_select = driver.find_element(
            By.XPATH, "//input[@value='metric']/ancestor::label//input[@role='combobox']"
        )
        _choose(driver, x_select, "cumulative_train_flops")
        y_path = "//*[contains(@class,'select-selector')][.//*[normalize-space(.)='best_accuracy']]"
        y_select = _wait(lambda: driver.find_elements(By.XPATH, y_path), "the y-axis metrics")[0]
        _choose(driver, y_select, "eval_accuracy")
        title = "//*[contains(@class,'xtitle')][normalize-space(.)='cumulative_train_flops']"
        _wait(lambda: driver.find_elements(By.XPATH, title), "the FLOPs x-axis")
        traces = _wait(
            lambda: driver.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace"), "curves"
        )
        driver.save_screenshot(str(tmp_path / "chart_view.png"))
        chosen = [
            e.text for e in driver.find_elements(By.CSS_SELECTOR, "[class*='selection-item']")
        ]
    assert "cumulative_train_flops" in chosen and "eval_accuracy" in chosen
    assert len(traces) >= 4  # one eval_accuracy curve per run (best_accuracy is one point)
    assert Path(tmp_path / "chart_view.png").stat().st_size > 10_000
