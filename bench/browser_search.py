"""Feature search as a new user tries it: real server (embedded model), real app, headless Chromium.

Text search on a sentence about anthrax (ranked by specificity, the default), then explanation
search for ordinary topic words over the local automatic descriptions. Times keypress/click to the
result on screen, counts the explanation hits the page shows, and saves screenshots to --shots
(default tests/artifacts/search/). Prints one table.

    .venv/bin/python bench/browser_search.py [--words anthrax,toxin,bacteria,virus] [--shots DIR]

The page opens with an example text already searched, so the background corpus's statistics are
computed (or read from the server's disk cache) before the first timed press. The first
explanation search describes the selected features unless the server's disk cache has them.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser_helpers import full_screenshot, launch_chromium, settle, start_server, start_streamlit, stop  # noqa: E402
from common import print_table  # noqa: E402

TEXT = "Bacillus anthracis causes anthrax: its spores germinate in the lungs and the bacteria release a toxin."


def search_text(page, text: str, done: str) -> float:
    """Type ``text`` into the text search, press Ctrl+Enter, and time until ``done`` shows and the page settles."""
    box = page.get_by_label("Text", exact=True)
    box.fill(text)
    t = time.time()
    box.press("Control+Enter")
    page.get_by_text(done).first.wait_for(timeout=600_000)
    settle(page, 300)
    return time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--words", default="anthrax,toxin,bacteria,virus")
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "search"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    server = app = None
    rows = []
    try:
        t0 = time.time()
        server, url = start_server(shots / "server.log")
        rows.append(("server start to model loaded", time.time() - t0, ""))
        app, app_url = start_streamlit(url, shots / "app.log")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(app_url + "/Feature_search?by=text")
            settle(page, 300)
            for i in range(2):
                t = search_text(page, TEXT + (" " * i), "Open its dashboard")
                rows.append((f"text search, press {i + 1}: Ctrl+Enter to the ranked table", t, ""))
            page.mouse.move(0, 0)
            full_screenshot(page, shots / "search_text.png")
            for word in ("anthrax", "Sherlock Holmes"):  # a word alone is read in context (carrier sentences)
                t = search_text(page, word, "Read in context")
                rows.append((f"text search '{word}' (read in context): Ctrl+Enter to the table", t, ""))
                page.mouse.move(0, 0)
                full_screenshot(page, shots / f"search_word_{word.split()[0].lower()}.png")
            page.goto(app_url + "/Feature_search?by=explanation")
            settle(page, 300)
            for j, word in enumerate(w.strip() for w in args.words.split(",") if w.strip()):
                box = page.get_by_label("Explanation contains", exact=True)
                box.fill(word)
                t = time.time()
                box.press("Enter")
                page.get_by_text("Answered by:").first.wait_for(timeout=600_000)
                settle(page, 300)
                body = page.inner_text("body")
                m = re.search(r"(\d+) of (\d+) features match", body)
                rows.append(
                    (
                        f"explanation search '{word}': Enter to the answer",
                        time.time() - t,
                        ("first search: describes the selection unless cached; " if j == 0 else "")
                        + (m.group(0) if m else "?"),
                    )
                )
                page.mouse.move(0, 0)
                full_screenshot(page, shots / f"search_explanation_{word}.png")
            browser.close()
    finally:
        stop(app)
        stop(server)
    print_table(("step", "seconds", "note"), [(n, f"{s:.1f}", note) for n, s, note in rows])


if __name__ == "__main__":
    main()
