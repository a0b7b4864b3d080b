"""Defects a new user saw in a real browser (issue 13), checked in headless Chromium against the
shared tiny-backend server (see browser_helpers).

Defect 9: (a) the app went to the network (the favicon came from fonts.gstatic.com: dozens of
console errors offline); (b) metric cards and sidebar labels were cut off ("embedd…", "Clamp th").
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from browser_helpers import settle, wait_charts
from test_browser import app, browser, page  # noqa: F401  (fixtures)

from unlearn_core.server.client import UnlearnClient

pytestmark = pytest.mark.browser
QID = "wmdp-bio:bio:5ef94a561c"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Streamlit's frontend first looks for its server under the page's own path (/Feature_search/_stcore/...)
# and then under the root: those two loopback 404s on a page URL are Streamlit's, not the app's.
STREAMLIT_PROBE = re.compile(r"^http://127\.0\.0\.1:\d+/[^/?#]+/_stcore/(health|host-config)$")
# a sweep whose best configuration has a long key ("t=0.45|n=10|c=12.5", shown on a metric card); its
# points coincide with the clean model's on the tiny backend
SPEC = {
    "thresholds": [0.45],
    "ns": [10],
    "values": [12.5],
    "question_limit": 6,
    "known": False,
    "side_effect_sets": ["mmlu:high_school_geography", "mmlu:human_aging"],
    "selection_tokens": 600,
    "loss_tokens": 200,
}


@pytest.fixture(scope="module")
def job(app):
    c = UnlearnClient(app["server"]["url"], token="")
    job = c.submit_job(SPEC)["id"]
    assert c.wait_job(job, timeout=900)["status"] == "done"
    return job


def pages(job: str) -> list[str]:
    return [
        "/",
        "/Feature_search?f=2&ntok=600",
        f"/Token_highlighting?features=2,3&qset=wmdp-bio&q={QID}",
        f"/Clamp_explorer?features=2,3,4&qset=wmdp-bio&q={QID}&c=50",
        f"/Batch_evaluation?job={job}",
    ]


def open_page(page, url: str) -> None:
    page.goto(url)
    settle(page)
    assert page.query_selector("[data-testid='stException']") is None, page.inner_text("[data-testid='stMain']")


# ---------------------------------------------------------------- defect 9a: nothing goes out


def test_no_request_leaves_the_machine_and_no_console_errors(app, page, job):
    requests, failed, errors = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.on(
        "console", lambda m: errors.append((m.text, (m.location or {}).get("url", ""))) if m.type == "error" else None
    )
    for path in pages(job):
        open_page(page, app["url"] + path)
        wait_charts(page)
        page.wait_for_timeout(1500)  # the favicon is set after the script has run
    external = sorted(
        {
            u
            for u in requests
            if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).hostname not in LOOPBACK
        }
    )
    assert not external, external
    assert not [f for f in failed if not STREAMLIT_PROBE.match(f.split(" (")[0])], failed
    errors = [e for e in errors if not STREAMLIT_PROBE.match(e[1])]
    assert not errors, errors


def test_the_favicon_is_served_by_the_app(app, page):
    open_page(page, app["url"] + "/")
    page.wait_for_timeout(1000)
    href = page.evaluate("document.querySelector('link[rel~=icon]')?.href")
    assert href and urlparse(href).hostname in LOOPBACK, href
    r = page.request.get(href)
    assert r.ok and r.headers.get("content-type", "").startswith("image/"), (href, r.status, r.headers)


# ---------------------------------------------------------------- defect 9b: nothing is cut off

CUT_OFF_JS = """sel => [...document.querySelectorAll(sel)].flatMap(e =>
    [e, ...e.querySelectorAll('*')].filter(x => x.clientWidth > 0 && x.scrollWidth > x.clientWidth + 1)
      .map(x => `${e.getAttribute('data-testid')}: "${e.innerText.trim()}" (${x.scrollWidth} > ${x.clientWidth})`))"""
CHECKED = (
    "[data-testid='stMetricValue'], [data-testid='stMetricLabel'], "
    "[data-testid='stSidebar'] [data-testid='stPageLink'], "
    "[data-testid='stSidebar'] [data-testid='stWidgetLabel']"
)


def cut_off(page) -> list[str]:
    return page.evaluate(CUT_OFF_JS, CHECKED)


def test_metric_cards_are_not_cut_off(app, page, job):
    seen = 0
    for path in pages(job):
        open_page(page, app["url"] + path)
        if "Batch" in path:
            page.wait_for_selector("text=Unlearning score", timeout=60_000)
            best = page.locator("[data-testid='stMetric']", has_text="Best config")
            assert "t=0.45|n=10|c=12.5" in best.inner_text(), best.inner_text()  # a long key
        seen += page.locator("[data-testid='stMetricValue']").count()
        assert not cut_off(page), (path, cut_off(page))
    assert seen >= 9  # Home's five, the Clamp explorer's one, the batch page's four


def test_sidebar_feature_set_links_are_not_cut_off(app, page):
    open_page(page, app["url"] + "/Feature_search?f=2&ntok=600")
    page.get_by_role("button", name=re.compile("Add feature 2 to")).click()
    page.locator("[data-testid='stSidebar'] [data-testid='stPageLink']", has_text="Clamp these").wait_for(
        timeout=30_000
    )
    settle(page)
    assert not cut_off(page), cut_off(page)
