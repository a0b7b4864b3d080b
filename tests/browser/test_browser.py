"""The app in a real browser: `streamlit run app.py` against a tiny-backend server, driven by
headless Debian Chromium through Playwright (no browser download; see browser_helpers).

Opens every page, moves the clamp slider from the keyboard and checks that the probabilities
on screen change, follows the sidebar navigation (the URL keeps the view), and saves a
screenshot of each page under tests/artifacts/ (gitignored). With UNLEARN_DOCS_SCREENSHOTS=1
it also refreshes the README's screenshots in docs/screenshots/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from browser_helpers import (
    ARTIFACTS,
    ROOT,
    full_screenshot,
    launch_chromium,
    require_chromium,
    settle,
    shared_tiny_server,
    start_streamlit,
    stop,
    wait_charts,
)

from unlearn_core.server.client import UnlearnClient

pytestmark = pytest.mark.browser
QID = "wmdp-bio:bio:5ef94a561c"
DOCS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def app(request, tmp_path_factory, shared_data):
    require_chromium()
    server = shared_tiny_server(request, tmp_path_factory)
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    proc, url = start_streamlit(server["url"], log)
    yield {"url": url, "server": server, "log": log}
    stop(proc)


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield pg
    pg.close()


def shot(page, name: str) -> None:
    full_screenshot(page, ARTIFACTS / f"{name}.png")
    if os.environ.get("UNLEARN_DOCS_SCREENSHOTS"):
        save_docs_png(ARTIFACTS / f"{name}.png", DOCS / f"{name}.png")


def save_docs_png(src: Path, dst: Path, max_bytes: int = 300_000) -> None:
    """A palette PNG (small enough to commit) of a screenshot."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    im = Image.open(src).convert("RGB")
    for colours in (128, 64, 32):
        im.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dst, optimize=True)
        if dst.stat().st_size < max_bytes:
            return
    raise AssertionError(f"{dst} is still {dst.stat().st_size} bytes")


def no_errors(page) -> None:
    """No exception box and no error alert on the page."""
    assert page.query_selector("[data-testid='stException']") is None, page.inner_text("[data-testid='stMain']")
    errs = page.query_selector_all("[data-testid='stAlertContentError']")
    assert not errs, [e.inner_text() for e in errs]


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS rgb() colours."""
    from unlearn_core.ui.render import luminance

    def rgb(c: str) -> tuple[int, int, int]:
        return tuple(int(x) for x in re.findall(r"\d+", c)[:3])  # type: ignore[return-value]

    a, b = sorted((luminance(rgb(fg)), luminance(rgb(bg))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def goto(page, url: str) -> None:
    page.goto(url)
    settle(page)
    no_errors(page)


def row_text(page, label: str) -> str:
    """The text of the probability table's row whose first cell starts with ``label``."""
    return page.locator("[data-testid='stMarkdownContainer'] table tr", has_text=label).first.inner_text()


def test_every_page_renders(app, page):
    base = app["url"]
    goto(page, base + "/")
    assert page.get_by_role("heading", name="SAE Unlearning Workbench").is_visible()
    assert page.get_by_text("tiny test backend", exact=False).first.is_visible()
    assert "target=bio-basics" in page.url  # the sidebar's target, in the URL
    page.get_by_role("button", name="Run the demo").click()  # the guided demo on the default target
    page.wait_for_selector("text=The intervention:", timeout=90_000)
    settle(page)
    no_errors(page)
    assert page.get_by_text("flipped none of the first", exact=False).is_visible()  # the tiny model knows nothing
    shot(page, "1_home")

    goto(page, base + "/Feature_search?f=2&ntok=600")
    page.wait_for_selector("text=Feature 2 of tiny")
    spans = page.locator(".uw-heat span[title]")
    assert spans.count() > 20
    assert re.match(r"#\d+ .+: \d+\.\d{3}$", spans.first.get_attribute("title"))
    assert wait_charts(page) == 1  # the activation histogram
    shot(page, "2_feature_search")

    goto(page, base + f"/Token_highlighting?features=2,3&qset=wmdp-bio&q={QID}")
    page.wait_for_selector("text=Correct answer: A.")
    assert page.locator(".uw-heat").count() >= 3
    shot(page, "3_token_highlighting")


def test_clamp_slider_changes_probabilities_on_screen(app, page):
    goto(page, app["url"] + f"/Clamp_explorer?features=2,3,4&qset=wmdp-bio&q={QID}&c=50")
    before = row_text(page, "intervened (c=50)")
    base_before = row_text(page, "base")
    assert re.search(r"A 0\.\d{4}", before)
    page.get_by_role("slider").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("text=intervened (c=51)", timeout=30_000)
    settle(page)
    after = row_text(page, "intervened (c=51)")
    assert after.split()[3:] != before.split()[3:], (before, after)  # the probabilities moved
    assert row_text(page, "base") == base_before
    assert "c=51" in page.url  # the view is in the URL

    page.get_by_role("button", name=re.compile("Add loss added")).click()
    page.wait_for_selector("text=Grey squares: loss added", timeout=60_000)
    page.get_by_role("button", name="Generate both").click()
    page.wait_for_selector("text=Intervened (", timeout=60_000)
    settle(page)
    no_errors(page)
    assert wait_charts(page) == 1  # the probability-vs-c curve (the bars are HTML)
    assert page.locator(".uw-bars").count() == 1
    shot(page, "4_clamp_explorer")

    # the sidebar navigation keeps the question and the features
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.locator("[data-testid='stSidebar'] [data-testid='stPageLink']", has_text="Token highlighting").click()
    page.wait_for_selector("text=Top features of one token", timeout=30_000)
    settle(page)
    assert "features=2%2C3%2C4" in page.url and f"q={QID.replace(':', '%3A')}" in page.url


def test_batch_evaluation_results(app, page):
    c = UnlearnClient(app["server"]["url"], token="")
    spec = {
        "thresholds": [0.5, 0.4],
        "ns": [1, 3],
        "values": [20.0, 100.0],
        "question_limit": 6,
        "known": False,
        "side_effect_sets": ["mmlu:high_school_geography", "mmlu:human_aging"],
        "selection_tokens": 600,
        "loss_tokens": 200,
    }
    first = c.submit_job({**spec, "values": [10.0, 50.0]})["id"]
    job = c.submit_job(spec)["id"]
    assert c.wait_job(first, timeout=900)["status"] == "done"
    assert c.wait_job(job, timeout=900)["status"] == "done"
    goto(page, app["url"] + f"/Batch_evaluation?job={job}&cmp={first}")
    page.wait_for_selector("text=Unlearning score", timeout=90_000)
    settle(page)
    no_errors(page)
    assert page.get_by_text("SAEBench style").is_visible()
    assert wait_charts(page) == 1  # Figure 5
    assert page.get_by_role("button", name="Results (CSV)").is_visible()
    shot(page, "5_batch_evaluation")


def test_dark_theme_heatmap_is_readable(app, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
    try:
        goto(pg, app["url"] + f"/Token_highlighting?features=2,3&qset=wmdp-bio&q={QID}")
        bg = pg.evaluate("getComputedStyle(document.querySelector('[data-testid=stApp]')).backgroundColor")
        assert bg != "rgb(255, 255, 255)", "the dark theme did not apply"
        # every shaded token's text contrasts with its background (WCAG ratio >= 4.5)
        pairs = pg.locator(".uw-heat span").evaluate_all(
            "els => els.filter(e => e.style.backgroundColor).map(e => "
            "[getComputedStyle(e).color, getComputedStyle(e).backgroundColor])"
        )
        assert len(pairs) > 20
        worst = min(contrast(fg, bg) for fg, bg in pairs)
        assert worst >= 4.5, worst
        full_screenshot(pg, ARTIFACTS / "dark_token_highlighting.png")
    finally:
        pg.close()
