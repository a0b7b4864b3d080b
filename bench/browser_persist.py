"""The persistent method in the app as a person sees it: real server (embedded model), real app,
headless Chromium. Needs a finished persistent run in the cache (``python -m unlearn_core persist
train --target bio-basics --name bio-basics-persist``). Opens the Batch evaluation page's
persistent panel (runs and training curve), the Clamp explorer on a known forget question with
the persistent model compared, then starts a small attack run (the persistent model and the
target's clamp against --attacks) and opens the Robustness page on it. Times each from action to
pixels; screenshots go to --shots. Prints one table.

    .venv/bin/python bench/browser_persist.py [--variant persist:bio-basics-persist] [--attacks filler]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser_helpers import full_screenshot, launch_chromium, settle, start_server, start_streamlit, stop  # noqa: E402
from common import machine, print_table  # noqa: E402

from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default=f"persist:{DEFAULT_TARGET}-persist")
    ap.add_argument("--target", default=DEFAULT_TARGET)
    ap.add_argument("--attacks", default="filler")
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "persist"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from unlearn_core.server.client import UnlearnClient

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    rows: list = []
    server = app = None
    name = args.variant.split(":", 1)[1]
    try:
        t0 = time.time()
        server, url = start_server(shots / "server.log")
        rows.append(("server start to model loaded", time.time() - t0))
        client = UnlearnClient(url, token="")
        assert args.variant in [r["variant"] for r in client.persist_runs() if r["status"] == "done"]
        app, app_url = start_streamlit(url, shots / "app.log")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.time()
            page.goto(f"{app_url}/Batch_evaluation?target={args.target}")
            head = page.get_by_text("Persistent: the clamp's features suppressed")
            head.wait_for(timeout=300_000)
            settle(page, 300)
            head.click()
            page.get_by_text("Training curve of").wait_for(timeout=300_000)
            page.locator("[data-testid=stPlotlyChart]").last.wait_for(timeout=300_000)
            settle(page, 300)
            rows.append(("open the persistent panel -> runs and training curve", time.time() - t))
            page.get_by_text("Persistent: the clamp's features suppressed").scroll_into_view_if_needed()
            full_screenshot(page, shots / "batch_persist_panel.png", max_height=2600)

            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            forget_q = client.questions(set="quiz:bio@heldout", known=True, limit=1)["questions"][0]["id"]
            sel = client.select_target(args.target)
            feats = ",".join(str(f["feature"]) for f in sel["features"])
            t = time.time()
            page.goto(
                f"{app_url}/Clamp_explorer?target={args.target}&qset=quiz:bio@heldout&q={forget_q}"
                f"&features={feats}&c=800"
            )
            page.get_by_text("Answer probabilities").wait_for(timeout=300_000)
            settle(page, 300)
            rows.append(("open the clamp explorer (base vs clamp)", time.time() - t))
            t = time.time()
            page.get_by_role("combobox", name="Compare with a fine-tuned model (RMU, persistent)").click()
            page.get_by_role("option", name=args.variant).click()
            page.get_by_text(f"P(correct) on {args.variant}").wait_for(timeout=300_000)
            settle(page, 120)
            rows.append((f"choose {args.variant} -> its row on screen", time.time() - t))
            page.mouse.move(0, 0)
            full_screenshot(page, shots / "clamp_persist.png", max_height=2600)

            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.time()
            run = client.start_attack(args.target, [args.variant, "default"], args.attacks.split(","))
            page.goto(f"{app_url}/Robustness?target={args.target}&run={run['id']}")
            client.wait_attack(run["id"], timeout=3600, poll=1.0)
            page.wait_for_selector("text=Does the knowledge come back?", timeout=120_000)
            settle(page, 600)
            rows.append((f"attack run ({args.variant}, default x {args.attacks}) to the heat map", time.time() - t))
            page.mouse.move(5, 5)
            full_screenshot(page, shots / "robustness_persist.png")
            rows.append(("exceptions on the pages", float(page.locator("[data-testid=stException]").count())))
            browser.close()
    finally:
        stop(app)
        stop(server)
    print(machine())
    print(f"run {name}")
    print_table(["step", "seconds"], [(a, f"{b:.1f}") for a, b in rows])


if __name__ == "__main__":
    main()
