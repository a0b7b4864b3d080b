"""The Robustness page in headless Chromium: a run started on the server shows its progress, then
its heat map; a click on a cell opens that cell fact by fact (and the URL names it). Saves the
screenshot tests/artifacts/robustness.png."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from browser_helpers import ARTIFACTS, full_screenshot, launch_chromium, require_chromium, settle, start_streamlit, stop
from robustness_helpers import RUN, TARGET, robustness_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(request, tmp_path_factory, shared_data):
    require_chromium()
    s = robustness_server(request, tmp_path_factory)
    proc, url = start_streamlit(s["url"], tmp_path_factory.mktemp("streamlit") / "streamlit.log")
    yield {**s, "app": url}
    stop(proc)


@pytest.fixture
def page(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        pg = b.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        b.close()


def cell_point(pg, defence: str, attack: str, rows: list[dict]):
    """The screen position of a heat-map cell (its transparent marker, in the run's row order)."""
    keys = [(r["defence"], r["attack"]) for r in rows]
    point = pg.locator("[data-testid=stPlotlyChart] .scatterlayer .point").nth(keys.index((defence, attack)))
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_progress_then_heat_map_then_a_clicked_cell(served, page):
    client = served["client"]
    run = client.start_attack(**RUN, delay_per_row=0.4)
    page.goto(f"{served['app']}/Robustness?target={TARGET}&run={run['id']}")
    progress = "[data-testid=stProgress]:has-text('rows done')"
    page.wait_for_selector(progress, timeout=120_000)  # the progress bar while it runs ...
    page.wait_for_selector(f"{progress}:has-text('ETA')", timeout=120_000)  # ... and its ETA, from the rows on
    page.screenshot(path=str(ARTIFACTS / "robustness_progress.png"))
    assert client.wait_attack(run["id"], timeout=600, poll=0.2)["status"] == "done"
    page.wait_for_selector("text=Does the knowledge come back?", timeout=60_000)  # the page reran by itself
    settle(page)
    page.wait_for_selector("[data-testid=stPlotlyChart] .scatterlayer .point", state="attached", timeout=30_000)
    result = client.attack_result(run["id"])
    row = next(r for r in result["rows"] if (r["defence"], r["attack"]) == ("default", "fill_blank"))
    x, y = cell_point(page, "default", "fill_blank", result["rows"])
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)
    settle(page)
    page.wait_for_function("() => new URLSearchParams(location.search).get('attack') === 'fill_blank'", timeout=30_000)
    q = parse_qs(urlparse(page.url).query)
    assert q["run"] == [run["id"]] and q["defence"] == ["default"] and q["attack"] == ["fill_blank"]
    attack_box = page.locator("[data-testid=stSelectbox]").filter(has_text="Attack").last
    assert attack_box.locator("input[role=combobox]").input_value().strip() == "fill_blank"
    metrics = page.locator("[data-testid=stMetric]")
    forgotten = metrics.filter(has_text="Forgotten").locator("[data-testid=stMetricValue]").inner_text()
    assert forgotten.strip() == str(row["n_forgotten"]) and row["n_forgotten"] > 0
    page.mouse.move(5, 5)  # no hover box over the map in the screenshot
    full_screenshot(page, ARTIFACTS / "robustness.png")
    assert page.locator("[data-testid=stException]").count() == 0
