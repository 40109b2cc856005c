"""The MLflow UI over a smoke sweep's store, in a real headless browser (Debian's chromium and
chromedriver through selenium): the experiment opens on the runs table, the child runs sort into
their grid rows, the parent run holds the sweep's report. Screenshots go to
``$DISTAR_TEST_ARTIFACTS`` (default ``test-artifacts/``) as the test's artifacts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sweeps_common import TINY, free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("DISTAR_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "mlflow-ui"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: apt-get install chromium chromium-driver (.ci/run does)",
)


@pytest.fixture
def ui_over_a_smoke_sweep(ray_address, tmp_path):
    """A finished smoke sweep (through Ray, as a user runs it) and ``mlflow server`` on it."""
    from test_bad_inputs import script

    storage = tmp_path / "sweep"
    flags = [f"--set={k}={v}" for k, v in TINY.items()]
    assert script("ablation_grid")(["--smoke-test", "--storage", str(storage), *flags]) == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{storage / 'mlflow.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url, storage
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, count: int = 1, seconds: float = 60.0) -> list:
    from selenium.webdriver.common.by import By

    deadline = time.time() + seconds
    while time.time() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{count} x {css!r} never appeared on {driver.current_url}")


def test_the_ui_shows_the_runs_grouped_by_row_and_the_sweeps_report(ui_over_a_smoke_sweep, browser):
    from mlflow.tracking import MlflowClient

    from distar.tracking import mlflow_ui_url

    url, storage = ui_over_a_smoke_sweep
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distar-table2")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    browser.get(mlflow_ui_url(url, experiment.experiment_id))  # the link the sweep prints
    wait_for(browser, "a[href*='/runs/']")
    assert "/runs" in browser.current_url and "overview" not in browser.current_url
    browser.save_screenshot(str(ARTIFACTS / "1-experiment-opens-on-runs.png"))

    children = "tags.`distar.sweep` = 'table2' and tags.`distar.trial` != ''"
    query = {"workflowType": "machine_learning", "searchFilter": children,
             "orderByKey": "attributes.run_name", "orderByAsc": "true"}  # fmt: skip
    browser.get(f"{url}/#/experiments/{experiment.experiment_id}/runs?"
                + urllib.parse.urlencode(query))  # fmt: skip
    browser.refresh()  # a new hash alone keeps the single-page app's previous view
    deadline = time.time() + 60
    while True:
        names = [a.text for a in wait_for(browser, "a[href*='/runs/']", count=4)]
        if "table2" not in names or time.time() > deadline:
            break
        time.sleep(0.5)
    labels = [name.split(" · ")[0] for name in names]
    assert len(names) == 4 and labels == sorted(labels)  # each row's seeds side by side
    assert {"KL, no CFG", "DI*-In α_rew 100, α_cfg 7.5 (best)"} == set(labels)
    browser.save_screenshot(str(ARTIFACTS / "2-child-runs-by-row.png"))

    (parent,) = client.search_runs([experiment.experiment_id], "tags.`distar.role` = 'parent'")
    browser.get(f"{url}/#/experiments/{experiment.experiment_id}/runs/"
                f"{parent.info.run_id}/artifacts/report/table2.md")  # fmt: skip
    deadline = time.time() + 60
    while "KL, no CFG" not in browser.find_element("tag name", "body").text:
        assert time.time() < deadline, "the parent run's report never showed"
        time.sleep(0.5)
    body = browser.find_element("tag name", "body").text
    assert "pareto.png" in body and "table2.csv" in body
    browser.save_screenshot(str(ARTIFACTS / "3-parent-run-report.png"))
    assert parent.data.params["sweep.trials"] == "4"
