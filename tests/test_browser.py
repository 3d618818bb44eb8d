"""The MLflow UI and the search report, opened in a real headless Chromium on a finished tiny search.

Checks what a user comparing runs relies on: the experiment page lists the search and, expanded, every
trial run; a trial run's metric charts render; the Models page shows the registered model with its
`champion` alias; the report page renders all its figures, sorts its table and logs no console error.
Screenshots of each page are saved as test artifacts (tests/browser.py says where).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import artifacts_dir, chromium, mlflow_ui
from tests.tiny_search import MODEL, Search

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)

TIMEOUT_MS = 60_000  # the UI's first load compiles a large bundle; on 2 busy cores that takes a while


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def ui(search: Search, tmp_path_factory: pytest.TempPathFactory):
    with mlflow_ui(search.env["MLFLOW_TRACKING_URI"], tmp_path_factory.mktemp("ui") / "ui.log") as (url, _):
        yield url


def _page(browser, console: list[str] | None = None):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    if console is not None:
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(str(e)))
    return page


def test_experiment_page_lists_the_search_and_every_trial(browser, ui: str, search: Search) -> None:
    runs = search.runs()
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3
    page = _page(browser)
    page.goto(f"{ui}/#/experiments/{search.experiment_id}/runs?workflowType=machine_learning")
    row = page.locator(".ag-row", has_text=parent.info.run_name)
    row.wait_for()
    for name in trials:  # children are folded under their parent until expanded
        assert page.locator(".ag-row", has_text=name).count() == 0
    row.locator("[col-id*='Run Name'] button").first.click()  # the expander
    for name in trials:
        page.locator(".ag-row", has_text=name).first.wait_for()
    assert page.get_by_text(f"{len(runs)} matching runs").is_visible()
    page.screenshot(path=artifacts_dir() / "experiment_runs.png", full_page=True)


def test_trial_run_shows_its_metric_charts(browser, ui: str, search: Search) -> None:
    # a Hyperband continuation: its val_auc has epochs of its own, so the chart draws a line, not a point
    trial = next(r for r in search.runs() if "from-" in r.info.run_name)
    page = _page(browser)
    page.goto(f"{ui}/#/experiments/{search.experiment_id}/runs/{trial.info.run_id}/model-metrics")
    page.get_by_role("heading", name=trial.info.run_name).wait_for()
    page.get_by_placeholder("Search metric charts").fill("val_auc")  # charts below the fold are not drawn
    page.get_by_role("heading", name="val_auc", exact=True).wait_for()
    page.get_by_text(f"{trial.info.run_name} (val_auc)").first.wait_for()  # the legend: the series is drawn
    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(state="attached")  # a plotted line
    page.screenshot(path=artifacts_dir() / "trial_run_metrics.png", full_page=True)


def test_models_page_shows_the_champion(browser, ui: str) -> None:
    page = _page(browser)
    page.goto(f"{ui}/#/models")
    page.get_by_role("link", name=MODEL, exact=True).wait_for()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=MODEL, exact=True))
    text = " ".join(row.inner_text().split())  # the UI writes "@\xa0champion"
    assert "@ champion : Version 1" in text, text
    page.screenshot(path=artifacts_dir() / "models.png", full_page=True)


def test_report_page_renders_offline_with_no_console_error(browser, search: Search) -> None:
    report = search.tmp / "reports" / "tiny" / "report.html"
    errors: list[str] = []
    page = _page(browser, errors)
    fetched: list[str] = []

    def only_the_page(route) -> None:  # the page must need nothing but itself
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_page)
    page.goto(Path(report).as_uri())
    images = page.locator("figure img")
    assert images.count() == 5
    sizes = images.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert all(done and w > 200 and h > 200 for done, w, h in sizes), sizes
    # sorting: click the objective's header twice; the column comes out ascending, then descending
    header = page.locator("#trials th", has_text="val_auc")
    column = page.locator("#trials th").all_inner_texts().index("val_auc")

    def scores() -> list[float]:
        cells = page.locator(f"#trials tbody tr td:nth-child({column + 1})").all()
        return [float(c.get_attribute("data-v")) for c in cells]

    header.click()
    assert scores() == sorted(scores())
    header.click()
    assert scores() == sorted(scores(), reverse=True)
    page.screenshot(path=artifacts_dir() / "report.png", full_page=True)
    assert fetched == [] and errors == []
