"""RMU in the app as a person sees it: real server (embedded model), real app, headless Chromium.

Needs a finished RMU run in the cache (``python -m unlearn_core rmu compare --target bio-basics
--name bio-basics-rmu``). Opens the Batch evaluation page (the RMU panel and its runs), submits a
small sweep with the RMU model beside the target's clamp (over the API, the same request the
page sends) and opens its results (Figure 5 with RMU as its own series, the per-method scores),
then the Clamp explorer on a forget question with "Compare with an RMU model" chosen and then
"Clamp on top of it", then Feature search and Token highlighting with the RMU model picked as the
page's Model. Times each from action to pixels; screenshots go to --shots. Prints one table.

    .venv/bin/python bench/browser_rmu.py [--variant rmu:bio-basics-rmu] [--shots DIR] [--pages-only]
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
from common import print_table  # noqa: E402

from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default=f"rmu:{DEFAULT_TARGET}-rmu")
    ap.add_argument("--target", default=DEFAULT_TARGET)
    ap.add_argument("--values", default="100,200,400", help="clamp values of the sweep")
    ap.add_argument("--job", help="an earlier run of this sweep (its id) instead of a new one")
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "rmu"))
    ap.add_argument("--pages-only", action="store_true", help="skip the sweep and the batch page")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from unlearn_core.server.client import UnlearnClient

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    rows = []
    server = app = None
    try:
        t0 = time.time()
        server, url = start_server(shots / "server.log")
        rows.append(("server start to model loaded", time.time() - t0))
        client = UnlearnClient(url, token="")
        assert args.variant in [r["variant"] for r in client.rmu_runs() if r["status"] == "done"], client.rmu_runs()
        t = time.time()
        job = (
            {"id": args.job}
            if args.job or args.pages_only
            else client.submit_job(
                {
                    "target": args.target,
                    "thresholds": [0.01],
                    "ns": [50],
                    "values": [float(v) for v in args.values.split(",")],
                    "loss_tokens": 2000,
                    "variants": [args.variant],
                }
            )
        )
        done = None if args.pages_only else client.wait_job(job["id"], timeout=3600)
        assert args.pages_only or (done["status"] == "done" and args.variant in [r["config"] for r in done["results"]])
        if not args.job and not args.pages_only:
            rows.append((f"sweep: target's N=50 at c={args.values} + {args.variant} (server)", time.time() - t))
        app, app_url = start_streamlit(url, shots / "app.log")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            if not args.pages_only:
                t = time.time()
                page.goto(f"{app_url}/Batch_evaluation?target={args.target}&job={job['id']}")
                settle(page, 300)
                page.get_by_text("Forget accuracy against side effects").wait_for(timeout=300_000)
                settle(page, 300)
                rows.append(("open the sweep's results (Figure 5 with RMU)", time.time() - t))
                page.mouse.move(0, 0)
                full_screenshot(page, shots / "batch_rmu.png")
                page.get_by_text("RMU: the fine-tuning baseline").click()
                settle(page, 60)
                full_screenshot(page, shots / "batch_rmu_panel.png", max_height=2200)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
            forget_q = client.questions(set="quiz:bio@heldout", known=True, limit=1)["questions"][0]["id"]
            sel = client.select_target(args.target)
            feats = ",".join(str(f["feature"]) for f in sel["features"])
            t = time.time()
            page.goto(
                f"{app_url}/Clamp_explorer?target={args.target}&qset=quiz:bio@heldout&q={forget_q}"
                f"&features={feats}&c=200"
            )
            settle(page, 300)
            page.get_by_text("Answer probabilities").wait_for(timeout=300_000)
            rows.append(("open the clamp explorer (base vs clamp)", time.time() - t))
            t = time.time()
            page.get_by_role("combobox", name="Compare with an RMU model").click()
            page.get_by_role("option", name=args.variant).click()
            page.get_by_text(f"P(correct) on {args.variant}").wait_for(timeout=300_000)
            settle(page, 120)
            rows.append((f"choose {args.variant} -> its row on screen", time.time() - t))
            page.mouse.move(0, 0)
            full_screenshot(page, shots / "clamp_rmu.png", max_height=2600)
            t = time.time()
            page.get_by_text("Clamp on top of it").click()
            page.get_by_text(f"{args.variant} + clamp (c=200)").first.wait_for(timeout=300_000)
            settle(page, 120)
            rows.append(("tick 'Clamp on top of it' -> the RMU + clamp row on screen", time.time() - t))
            page.mouse.move(0, 0)
            full_screenshot(page, shots / "clamp_on_top_rmu.png", max_height=2600)

            for model in ("base", args.variant):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t = time.time()
                page.goto(f"{app_url}/Feature_search?target={args.target}&by=text&model={model}")
                page.get_by_role("button", name="Open its dashboard").wait_for(timeout=300_000)
                settle(page, 120)
                rows.append((f"Feature search by text, Model = {model}: table on screen", time.time() - t))
                page.mouse.move(0, 0)
                full_screenshot(page, shots / f"search_{model.replace(':', '_')}.png", max_height=1800)
            t = time.time()
            page.goto(f"{app_url}/Token_highlighting?target={args.target}&src=own%20text&model={args.variant}")
            page.get_by_text("Top features of one token").wait_for(timeout=300_000)
            settle(page, 120)
            rows.append((f"Token highlighting, Model = {args.variant}: page on screen", time.time() - t))
            page.mouse.move(0, 0)
            full_screenshot(page, shots / "tokens_rmu.png", max_height=1800)
            browser.close()
    finally:
        stop(app)
        stop(server)
    print_table(["step", "seconds"], [(a, f"{b:.1f}") for a, b in rows])


if __name__ == "__main__":
    main()
