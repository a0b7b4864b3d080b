"""The Robustness page as a person sees it on the embedded model: real server, real app, headless
Chromium. Starts `serve` and the app, starts an attack run on bio-basics from the client (the
target's default defence and static clamp against --attacks), opens the page on it, times the
progress bar's first ETA, waits for the heat map, clicks one cell and screenshots the page (the
screenshots go to --shots). Prints one table of seconds.

    .venv/bin/python bench/browser_robustness.py [--attacks fill_blank,few_shot,filler] [--cell default,few_shot:8]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attacks", default="fill_blank,few_shot,filler")
    ap.add_argument("--defences", default="default,clamp")
    ap.add_argument("--cell", default="default,few_shot:8", help="defence,attack of the cell to click")
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "robustness_embedded"))
    args = ap.parse_args()
    from common import machine
    from playwright.sync_api import sync_playwright

    from unlearn_core.server.client import UnlearnClient

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    rows, server, app = [], None, None
    t0 = time.time()
    try:
        server, url = start_server(shots / "server.log")
        rows.append(("server start to model loaded", time.time() - t0))
        app, app_url = start_streamlit(url, shots / "app.log")
        client = UnlearnClient(url, token="")
        defences, attacks = args.defences.split(","), args.attacks.split(",")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.time()
            run = client.start_attack("bio-basics", defences, attacks)
            page.goto(f"{app_url}/Robustness?target=bio-basics&run={run['id']}")
            page.wait_for_selector("[data-testid=stProgress]", timeout=600_000)
            rows.append(("start to the progress bar on screen", time.time() - t))
            page.wait_for_selector("[data-testid=stProgress]:has-text('ETA')", timeout=1_800_000)
            rows.append(("start to the progress bar's ETA", time.time() - t))
            full_screenshot(page, shots / "robustness_progress.png")
            client.wait_attack(run["id"], timeout=3600, poll=1.0)
            page.wait_for_selector("text=Does the knowledge come back?", timeout=120_000)
            settle(page, 600)
            rows.append(("start to the heat map (run done)", time.time() - t))
            result = client.attack_result(run["id"])
            d, a = args.cell.split(",")
            keys = [(r["defence"], r["attack"]) for r in result["rows"]]
            point = page.locator("[data-testid=stPlotlyChart] .scatterlayer .point").nth(keys.index((d, a)))
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            t = time.time()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function(f"() => new URLSearchParams(location.search).get('attack') === '{a}'")
            settle(page, 600)
            rows.append((f"click on the {d} x {a} cell to its facts", time.time() - t))
            page.mouse.move(5, 5)
            full_screenshot(page, shots / "robustness.png")
            errors = page.locator("[data-testid=stException]").count()
            rows.append(("exceptions on the page", float(errors)))
            browser.close()
    finally:
        stop(app)
        stop(server)
    print(machine())
    print("| step | seconds |\n| --- | --- |")
    for name, s in rows:
        print(f"| {name} | {s:.1f} |")
    print(re.sub(r"\s+", " ", f"run {run['id']}: {len(result['rows'])} rows"))


if __name__ == "__main__":
    main()
