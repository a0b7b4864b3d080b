"""The demo report (issue 35) in headless Chromium: opened from disk with the network cut off, it
makes no request but its own file, logs no console error, and shows the numbers and verdicts."""

from __future__ import annotations

import pytest
from browser_helpers import ARTIFACTS, full_screenshot, launch_chromium, require_chromium

from unlearn_core.evaluation.verdicts import verdict_of
from unlearn_core.ui.report import report_html

pytestmark = pytest.mark.browser


def _score(probs: list[float]) -> dict:
    pred = max(range(4), key=lambda i: probs[i])
    return {"probs": probs, "predicted": pred, "correct": pred == 1, "mass": 1.0, "scoring": "cloze", "loglik": None}


def _example(qid: str, text: str, choices: list[str], before: list[float], after: list[float]) -> dict:
    q = {"id": qid, "question": text, "choices": choices, "answer": 1, "subject": "s", "source": "quiz", "extra": {}}
    ex = {"question": q, "base": _score(before), "intervened": _score(after)}
    return {**ex, "verdict": verdict_of(ex).to_dict()}


MALARIA = ("quiz-bio:1", "Which organism causes malaria?", ["A virus", "Plasmodium", "A fungus", "<script>x</script>"])
MALARIA += ([0.1, 0.75, 0.1, 0.05], [0.5, 0.12, 0.3, 0.08])
MARPLE = (
    "quiz-retain:2",
    "Who created Miss Marple?",
    ["Dorothy L. Sayers", "Agatha Christie", "Ngaio Marsh", "P. D. James"],
)
MARPLE += ([0.2, 0.57, 0.13, 0.1], [0.3, 0.42, 0.18, 0.1])
RESULT = {
    "target": "bio-basics",
    "description": "Textbook biology <and> infectious disease",
    "forget_corpus": "quiz:bio@train",
    "forget_corpus_note": "",
    "retain_corpora": ["wikitext@train"],
    "intervention": {"sae": "embedded", "mode": "dsg", "c": 400.0, "features": [1360, 7261], "gate": 0.103},
    # (id, question, choices, clean probabilities, clamped probabilities); the second choice is right
    "forget_example": _example(*MALARIA),
    "retain_example": _example(*MARPLE),
    "n_checked_forget": 3,
    "n_checked_retain": 1,
    "summary": "The clamp made the model forget a fact it knew.",
}


def test_the_demo_report_opens_offline_with_no_request_and_no_console_error(tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(
        report_html(
            RESULT,
            {"name": "bio-basics", "description": RESULT["description"]},
            {"model": "embedded:gemma-3-270m"},
            {1360: "malaria and its parasite"},
        )
    )
    requests, errors = [], []
    with sync_playwright() as p:
        b = launch_chromium(p)
        ctx = b.new_context(offline=True)
        page = ctx.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        text = page.inner_text("body")
        full_screenshot(page, ARTIFACTS / "demo_report.png", width=1000)
        bars = page.locator("span.bar").count()
        b.close()
    assert requests == [path.as_uri()] and errors == []
    assert "Which organism causes malaria?" in text and "<script>x</script>" in text  # shown as text, escaped
    assert "The answer flipped: the clamp made the model forget it (P(correct) 0.75 → 0.12)." in text
    assert "Weakened: a general-knowledge question that stays right, but less sure" in text
    assert "Still right, but less sure: P(correct) 0.57 → 0.42" in text
    assert "malaria and its parasite" in text and "τ = 0.103" in text
    assert bars == 16  # 4 answers x (clean, clamped) x 2 questions
