"""The guided demo as a person sees it: real server (embedded model), real app, headless Chromium.

Starts `python -m unlearn_core serve` and `streamlit run app.py` on free loopback ports, opens
Home, presses "Run the demo" on the default target (bio-basics) and times click -> result on
screen, then opens the demo's question in the Clamp explorer via its link and times that too;
last, Feature search with the target's selection and the dashboard of its top feature.
Screenshots go to --shots (default tests/artifacts/demo/). Prints one table, and for each Feature
search step the model-lock holds the server took meanwhile, by kind of work (``/api/info``'s
lock_stats), to see what else it was doing.

    .venv/bin/python bench/browser_demo.py [--repeats 2] [--idle-search 2] [--shots DIR]

``--idle-search N`` also times the Feature search step N times on the idle server, before the
demo: the step after the demo starts while the server may still be scoring the Clamp explorer
page the demo's link opened.

The first press computes the selection statistics unless they are cached (cache/feature_stats);
later presses are answered from the app's cache or the server's disk caches.
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

from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402
from unlearn_core.server.client import UnlearnClient  # noqa: E402


def lock_holds(client: UnlearnClient) -> dict[str, int]:
    """How many holds of the model lock each kind of work has taken so far (``/api/info``)."""
    return {k: v["n"] for k, v in client.info()["lock_stats"]["by_label"].items()}


def holds_between(before: dict[str, int], after: dict[str, int]) -> str:
    """The holds taken between two ``lock_holds`` readings, most first: what the server did meanwhile."""
    d = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    return ", ".join(f"{k} x{n}" for k, n in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def feature_search(browser, url: str, app_url: str, shots: Path, when: str) -> tuple[str, float]:
    """Open Feature search, run the target's selection and wait for its top feature's dashboard."""
    client = UnlearnClient(url, token="")
    before = lock_holds(client)
    top = client.select_target(DEFAULT_TARGET)["features"][0]["feature"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t = time.time()
    page.goto(app_url + f"/Feature_search?target={DEFAULT_TARGET}&by=forget%2Fretain&f={top}")
    settle(page, 300)
    page.get_by_role("button", name="Run the selection").click()
    page.get_by_text("Open its dashboard").first.wait_for(timeout=600_000)
    page.get_by_text(f"Feature {top} of").first.wait_for(timeout=600_000)  # the dashboard itself
    settle(page, 600)
    seconds = time.time() - t
    full_screenshot(page, shots / "feature_search.png")
    page.close()
    print(f"model-lock holds during Feature search ({when}): {holds_between(before, lock_holds(client))}", flush=True)
    return f"Feature search ({when}): open, run the target's selection, top feature {top}'s dashboard settled", seconds


def batch_start(browser, app_url: str, shots: Path) -> list[tuple[str, float]]:
    """Batch evaluation with the target's default grid: open, press "Run the sweep", wait for the
    progress bar's text, then for its first ETA (the current stage's, issue 35), then for the
    run's ETA (the first configuration done); then cancel the run."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t = time.time()
    page.goto(app_url + f"/Batch_evaluation?target={DEFAULT_TARGET}")
    settle(page, 300)
    rows = [("open Batch evaluation", time.time() - t)]
    run = page.get_by_role("button", name="Run the sweep")
    if not run.is_visible():  # the configuration folds away once the server has runs
        page.get_by_text("Configure a sweep").first.click()
        run.wait_for(timeout=60_000)
    t = time.time()
    run.click()
    page.get_by_text("configurations (the clean baseline").first.wait_for(timeout=600_000)
    rows.append(("'Run the sweep' to its progress bar", time.time() - t))
    page.get_by_text(re.compile(r"configurations .*ETA \d")).first.wait_for(timeout=900_000)
    rows.append(("'Run the sweep' to the first ETA (the stage's or the run's)", time.time() - t))
    page.mouse.move(0, 0)
    full_screenshot(page, shots / "batch_stage_eta.png")
    page.get_by_text(re.compile(r"configurations .*· ETA \d")).first.wait_for(timeout=900_000)
    rows.append(("'Run the sweep' to the progress bar's ETA", time.time() - t))
    page.mouse.move(0, 0)
    full_screenshot(page, shots / "batch_running.png")
    page.get_by_role("button", name="Cancel the run").click()
    settle(page, 120)
    page.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2, help="demo presses in fresh browser pages")
    ap.add_argument("--idle-search", type=int, default=0, help="times to time Feature search first (idle server)")
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "demo"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    log = shots / "server.log"
    t0 = time.time()
    server = app = None
    rows = []
    try:
        server, url = start_server(log)
        rows.append(("server start to model loaded", time.time() - t0))
        app, app_url = start_streamlit(url, shots / "app.log")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            for i in range(args.idle_search):
                rows.append(feature_search(browser, url, app_url, shots, f"idle server, {i + 1}"))
            for i in range(args.repeats):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t = time.time()
                page.goto(app_url)
                settle(page, 120)
                rows.append((f"open Home (page {i + 1})", time.time() - t))
                t = time.time()
                page.get_by_role("button", name="Run the demo").click()
                page.get_by_text("Forgotten: a question the model knew").wait_for(timeout=600_000)
                settle(page, 600)
                rows.append((f"'Run the demo' to both questions on screen (press {i + 1})", time.time() - t))
                if i == 0:
                    page.mouse.move(0, 0)  # no button tooltip over the page in the screenshot
                    full_screenshot(page, shots / "home_demo.png")
                    t = time.time()
                    page.get_by_text("Open this question in the Clamp explorer").first.click()
                    settle(page, 300)
                    page.get_by_text("Clamp value c").first.wait_for(timeout=300_000)
                    settle(page, 300)
                    rows.append(("demo link to the Clamp explorer, settled", time.time() - t))
                    full_screenshot(page, shots / "clamp_from_demo.png")
                page.close()
            rows.append(feature_search(browser, url, app_url, shots, "after the demo"))
            rows += batch_start(browser, app_url, shots)
            browser.close()
    finally:
        stop(app)
        stop(server)
    print_table(("step", "seconds"), [(name, f"{s:.1f}") for name, s in rows])


if __name__ == "__main__":
    main()
