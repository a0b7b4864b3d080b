"""Clamp explorer defects that only a real browser shows (issue 13), in headless Chromium against
the shared tiny-backend server. Each test failed before its fix.

* Defect 1: after ticking "Only questions the model knows" (or filtering the questions), the
  question box kept showing a question that is not in its new list, while the page scored another.
* Defect 5: rapid slider key presses were lost (the slider snapped back, the URL disagreed).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from browser_helpers import settle
from test_browser import app, browser, page  # noqa: F401  (fixtures)

from unlearn_core.server.client import UnlearnClient

pytestmark = pytest.mark.browser


def question_box_text(pg) -> str:
    box = pg.locator("[data-testid=stSelectbox]").filter(has_text="Question (")
    return box.locator("input[role=combobox]").input_value().strip()


def shown_question(pg) -> str:
    """The question the page scores, from its 'The question' expander."""
    exp = pg.locator("[data-testid=stExpander]").filter(has_text="The question")
    exp.locator("summary").click()
    return exp.locator("strong").first.inner_text().strip()


def test_shrinking_question_list_keeps_the_box_and_the_scored_question_in_step(app, page):
    """Defect 1. The known filter and the question filter both replace the box's options; the
    tiny model knows no question, so the question filter exercises the same path here."""
    client = UnlearnClient(app["server"]["url"])
    qs = client.questions("wmdp-bio", limit=2000)["questions"]
    first = qs[0]
    words = {w.strip("?,.()").lower() for q in qs[1:40] for w in q["question"].split()}
    word = next(w for w in sorted(words) if len(w) >= 7 and w.isalpha() and w not in first["question"].lower())
    page.goto(
        app["url"]
        + "/Clamp_explorer?"
        + urlencode({"target": "wmdp-bio", "qset": "wmdp-bio", "q": first["id"], "features": "2,3"})
    )
    settle(page, 120)
    assert question_box_text(page).startswith(first["question"][:30])
    page.get_by_placeholder("word in the question").fill(word)
    page.keyboard.press("Enter")
    settle(page, 120)
    page.wait_for_timeout(500)
    box = question_box_text(page).rstrip("…")
    scored = shown_question(page)
    assert word in box.lower() or word in scored.lower()
    assert box and scored.startswith(box[:60]), (box, scored)
    assert not scored.startswith(first["question"][:40])  # the first question is not in the list any more


def test_rapid_slider_presses_are_not_lost(app, page):
    page.goto(
        app["url"]
        + "/Clamp_explorer?"
        + urlencode({"qset": "wmdp-bio", "q": "wmdp-bio:bio:5ef94a561c", "features": "2,3", "c": "70"})
    )
    settle(page, 120)
    slider = page.get_by_role("slider")
    slider.focus()
    for _ in range(6):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(40)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMain] td')]"
        ".some(e => e.textContent.includes('intervened (c=76)'))",
        timeout=60_000,
    )
    settle(page, 60)
    page.wait_for_timeout(800)
    assert page.locator("[data-testid=stSliderThumbValue]").first.inner_text().strip() == "76"
    assert parse_qs(urlparse(page.url).query)["c"] == ["76"]
    tds = page.locator("[data-testid=stMain] td").all_inner_texts()
    assert any("intervened (c=76)" in t for t in tds)
