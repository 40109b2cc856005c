"""The MLflow UI over a smoke sweep's store (the embedded world, and sd15-tiny with its
benchmarks: the README's command, run as written), served as the README says (``mlflow server
--app-name distar``), in a real headless browser (Debian's chromium and chromedriver through
selenium) with a fresh profile: the link the sweep prints opens the runs table grouped by row,
sorted by the objective, with each row's mean ± CI and paired verdict; clicking through from
it (a run, its artifacts, back) never leaves the training layout; the experiment opens on the
runs table, the parent run holds the sweep's report. Screenshots go to
``$DISTAR_TEST_ARTIFACTS`` (default ``test-artifacts/``) as the test's artifacts."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sweeps_common import free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("DISTAR_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "mlflow-ui"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: apt-get install chromium chromium-driver (.ci/run does)",
)


@pytest.fixture(params=["gmm", "sd15-tiny"])
def ui_over_a_smoke_sweep(request, tmp_path, ray_address):
    """A finished smoke sweep (through Ray, as a user runs it; conftest runs each once), the UI
    served on it as the sweep says (``mlflow server --app-name distar``), and the MLflow links
    the sweep printed (pointed at that server). ``ray_address``: both smoke fixtures start the
    session's Ray, named here so that conftest orders this module with the others on it."""
    fixture = {"gmm": "gmm_smoke", "sd15-tiny": "readme_sd15_smoke"}[request.param]
    storage, out = request.getfixturevalue(fixture)
    assert "smoke test: it checks that the whole path runs" in out  # says what it is, at once
    (command,) = [
        line.removeprefix("MLflow: ").removesuffix(", then")
        for line in out.splitlines()
        if line.startswith("MLflow: mlflow server")
    ]
    printed = [line.split()[1] for line in out.splitlines() if line.startswith("MLflow: http")]
    port = free_port()
    served = [sys.executable, "-m", *shlex.split(command.replace("--port 5000", f"--port {port}"))]
    assert "--app-name" in served and f"sqlite:///{storage.resolve() / 'mlflow.db'}" in served
    server = subprocess.Popen(
        served,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "mlflow-server.log", "w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    links = [link.replace("http://127.0.0.1:5000", url) for link in printed]
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, (
                    "mlflow server down: " + (tmp_path / "mlflow-server.log").read_text()[-3000:]
                )
                time.sleep(0.5)
        yield url, storage, links, request.param
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # its whole group: terminate() reached the parent
        server.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
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

    from distar.track.tracking import mlflow_ui_url

    url, storage, links, world = ui_over_a_smoke_sweep
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distar-table2")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    the_printed_link_lands_on_the_answer(browser, links, world)  # first: a fresh profile
    clicking_through_stays_in_the_training_layout(browser, links[0], world)

    browser.get(mlflow_ui_url(url, experiment.experiment_id))
    wait_for(browser, "a[href*='/runs/']")
    assert "/runs" in browser.current_url and "overview" not in browser.current_url
    shot = f"{world}-"
    browser.save_screenshot(str(ARTIFACTS / f"{shot}1-experiment-opens-on-runs.png"))

    children = "tags.`distar.sweep` = 'table2' and tags.`distar.trial` != ''"
    query = {
        "workflowType": "machine_learning",
        "searchFilter": children,
        "orderByKey": "attributes.run_name",
        "orderByAsc": "true",
    }
    browser.get(
        f"{url}/#/experiments/{experiment.experiment_id}/runs?" + urllib.parse.urlencode(query)
    )
    browser.refresh()  # a new hash alone keeps the single-page app's previous view
    deadline = time.time() + 60
    while True:
        names = [a.text for a in wait_for(browser, "a[href*='/runs/']", count=4)]
        if "table2" not in names or time.time() > deadline:
            break
        time.sleep(0.5)
    # named by what tells them apart, first: the paper's scales, the method, the seed
    assert names == ["0/0 KL s0", "0/0 KL s1", "100/7.5 DI*-In s0", "100/7.5 DI*-In s1"]
    browser.save_screenshot(str(ARTIFACTS / f"{shot}2-child-runs-by-row.png"))

    (parent,) = client.search_runs([experiment.experiment_id], "tags.`distar.role` = 'parent'")
    browser.get(
        f"{url}/#/experiments/{experiment.experiment_id}/runs/"
        f"{parent.info.run_id}/artifacts/report/table2.md"
    )
    # the report file open in the artifact browser, beside its siblings (the Overview, which
    # the page may show first, holds the table too: its row alone proves nothing)
    wait_for_text(browser, ["KL, no CFG", "pareto.png", "table2.csv", "paired.md"])
    browser.save_screenshot(str(ARTIFACTS / f"{shot}3-parent-run-report.png"))
    assert parent.data.params["sweep.trials"] == "4"
    a_runs_charts_lead_with_its_metrics(browser, client, url, experiment.experiment_id, world)


GENAI = ("Judges", "Evaluation runs", "Sessions", "Evaluations")  # MLflow 3's GenAI layout


def training_layout(browser, where: str) -> str:
    """The page's text, asserted to be MLflow's training layout (no GenAI sidebar or trail)
    with the Assistant panel closed."""
    body = body_text(browser)
    assert not [w for w in GENAI if w in body], f"GenAI layout at {where}: {body[:1500]}"
    assert "Ask a question" not in body, f"the Assistant panel is open at {where}"
    return body


def clicking_through_stays_in_the_training_layout(browser, view: str, world: str) -> None:
    """From the printed link's runs table, as a user clicks: a run, its Artifacts tab, back,
    back: every page in the training layout (MLflow's own run links carry no
    ``workflowType``: ``--app-name distar`` makes training the fresh browser's default), and
    back on the runs table, the view the link opened."""
    from selenium.webdriver.common.by import By

    browser.get("about:blank")
    browser.get(view)
    wait_for_text(browser, ["Group: KL, no CFG", "0/0 KL s0"])
    (run,) = [
        a
        for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='/runs/']")
        if a.text == "0/0 KL s0"
    ]
    run.click()
    wait_for_text(browser, ["0/0 KL s0", "Overview", "Artifacts", "Parameters"])
    training_layout(browser, "a run clicked in the runs table")
    browser.save_screenshot(str(ARTIFACTS / f"{world}-7-clicked-run.png"))
    (tab,) = [
        t
        for t in browser.find_elements(By.XPATH, "//*[normalize-space(text())='Artifacts']")
        if t.is_displayed()
    ]
    tab.click()
    wait_for_text(browser, ["config.yaml", "metrics_table.json"])
    training_layout(browser, "the run's artifacts")
    browser.save_screenshot(str(ARTIFACTS / f"{world}-8-clicked-artifacts.png"))
    browser.back()
    wait_for_text(browser, ["0/0 KL s0", "Parameters"])
    training_layout(browser, "back on the run")
    browser.back()
    # the view the link opened, again (MLflow rebuilds it from the browser's saved view, which
    # the page seeded from the shared one: without that, no groups and default columns)
    wait_for_text(browser, ["Group: KL, no CFG", "distar.row_ci95", "0/0 KL s0"])
    training_layout(browser, "back on the runs table")
    browser.save_screenshot(str(ARTIFACTS / f"{world}-9-back-on-the-runs.png"))


def a_runs_charts_lead_with_its_metrics(browser, client, url, experiment_id, world) -> None:
    """A child run's charts: curves (a smoke grid evaluates 4 times or more), sections of
    metrics with no CI bounds among them (a table per benchmark), on a training run's page."""
    from distar.track.tracking import run_url

    (child,) = client.search_runs([experiment_id], "attributes.run_name = '0/0 KL s0'")
    assert len(client.get_metric_history(child.info.run_id, "eval/reward")) >= 3
    browser.get("about:blank")
    browser.get(run_url(url, experiment_id, child.info.run_id, "model-metrics"))
    body = wait_for_text(browser, ["0/0 KL s0", "eval", "train/loss", "Step"])  # drawn
    assert "ci95" not in body and "Judges" not in body, body[:2000]
    time.sleep(2)  # the section's other charts
    browser.save_screenshot(str(ARTIFACTS / f"{world}-6-run-charts.png"))


VERDICT = r"[▲▼] (eval|parti|coco)/|n\.s\.|no verdict: 2 seed"


def body_text(browser) -> str:
    return browser.find_element("tag name", "body").text


def wait_for_text(browser, texts: list[str], seconds: float = 60.0) -> str:
    deadline = time.time() + seconds
    while not all(t in (body := body_text(browser)) for t in texts):
        missing = [t for t in texts if t not in body]
        assert time.time() < deadline, f"never on screen: {missing} at {browser.current_url}"
        time.sleep(0.5)
    return body


def the_printed_link_lands_on_the_answer(browser, links: list[str], world: str) -> None:
    """The sweep's first printed link, opened as a pasted link is: its runs grouped by row
    (each row's seeds inside its group, the group row showing their mean), each run with its
    row's paired verdict, the objective as the sort -- the Table-2 answer with no click. The
    second link: the sweep's run, whose Overview shows Table 2 with the verdicts (one click on
    "Show more" for all of its rows)."""
    from selenium.webdriver.common.by import By

    from distar.config.benchmarks import logged_name
    from distar.config.tree import world_preset

    view, answer = links
    objective = logged_name(world_preset(world).objective[0])
    rows = ["KL, no CFG", "DI*-In α_rew 100, α_cfg 7.5"]
    # a fresh page load, as a pasted link is: a new hash alone keeps the app's previous view,
    # and a reload of the URL the app rewrote (its search facets added) ignores the shared view
    browser.get("about:blank")
    browser.get(view)
    body = wait_for_text(
        browser,
        [f"Group: {row}" for row in rows]
        + [f"Sort: {objective}", "distar.row_ci95", "distar.paired", "baseline"],
    )
    training_layout(browser, "the printed link")
    # each seed's line carries its row's mean ± 95 % CI, rounded to the CI (MLflow's group
    # row shows a bare, unrounded mean): uncertainty at the first glance
    assert len(re.findall(r" ± [\d.]+ \(2 seeds\)", body)) >= 4, body[-2000:]
    # the group names are whole on screen, not cut ("Group: DI*-In α…"): the view sets the
    # run-name column's width
    groups = browser.execute_script(
        "return [...document.querySelectorAll('*')].filter(e => e.childElementCount === 0 &&"
        " e.textContent.startsWith('Group: ')).map(e => [e.textContent,"
        " e.scrollWidth > e.clientWidth + 1 || e.parentElement.scrollWidth >"
        " e.parentElement.clientWidth + 1])"
    )
    assert sorted(text for text, _ in groups) == sorted(f"Group: {row}" for row in rows), groups
    assert not [text for text, cut in groups if cut], f"group names cut on screen: {groups}"
    browser.save_screenshot(str(ARTIFACTS / f"{world}-4-printed-link-the-answer.png"))
    assert body.count("baseline") >= 2  # the baseline row's two seeds say so
    # the other row's two seeds carry its verdict (the mark first: the cell is narrow): with
    # the smoke grid's 2 seeds, why there is none
    assert len(re.findall(VERDICT, body)) >= 2, body[-1500:]
    runs = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='/runs/']")]
    assert sum(bool(re.search(r" s[01]$", r)) for r in runs) == 4 and "table2" not in runs
    browser.save_screenshot(str(ARTIFACTS / f"{world}-4-printed-link-the-answer.png"))

    browser.get("about:blank")
    browser.get(answer)
    body = wait_for_text(browser, ["Description", "Table 2", "baseline"])
    training_layout(browser, "the sweep's run")
    assert "Smoke test: not results" in body, body[:2000]  # a smoke test says so, first
    more = browser.find_elements(By.XPATH, "//*[normalize-space(text())='Show more']")
    if more:
        more[0].click()
    body = wait_for_text(browser, rows + ["paired", "Units:"])
    # the units line links nowhere (markdown read "[-1, 1] (world.reward)" as a link)
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a")]
    assert not [h for h in hrefs if h and "world.reward" in h], hrefs
    assert re.search(VERDICT, body), body[:3000]
    browser.save_screenshot(str(ARTIFACTS / f"{world}-5-sweep-run-overview.png"))
