"""The clamp slider as a person feels it: real server (embedded model), real app, headless Chromium.

Starts `python -m unlearn_core serve` and `streamlit run app.py` on free loopback ports, asks the
server for the default target's (bio-basics) default features (so the server is warm: model
loaded, selection cached), then in Chromium:

* **first open** of the Clamp explorer on a link with the target's features and c: `goto` to the
  probability table on screen;
* **slider steps**: focus the slider, press ArrowRight, time keypress -> the table header showing
  the new c (the new numbers are in the same element); p50/p95 over ``--steps``;
* **rapid presses**: ``--burst`` ArrowRight presses 30 ms apart; the slider, the URL and the table
  must all end on the start value + burst (no key press lost);
* **question switch**: pick the next question in the box -> the table whose caption names the new
  question (its numbers), and -> the page settled (curve and heat map drawn);
* **known-filter toggle**: tick "Only questions the model knows" -> the question box settled;
* with ``--sweep``: the slider steps again while a sweep job runs on the server and ``--pollers``
  other clients poll it (GET /api/jobs/<id>, /api/health) once a second.

    .venv/bin/python bench/browser_slider.py [--steps 20] [--burst 5] [--sweep] [--pollers 3]

Prints the CPU, then one table (milliseconds unless said). Screenshots go to --shots.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser_helpers import full_screenshot, launch_chromium, settle, start_server, start_streamlit, stop  # noqa: E402
from common import pct, print_table  # noqa: E402

from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402

TABLE_HAS = (
    """([t]) => [...document.querySelectorAll('[data-testid=stMain] td')].some(e => e.textContent.includes(t))"""
)


NEW_CAPTION = """([old, c]) => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stCaptionContainer]')]
    .some(e => e.textContent.startsWith('Question ') && !e.textContent.startsWith(old) && e.textContent.includes(c))"""


def query(page) -> dict[str, str]:
    """The page URL's query parameters, decoded."""
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(page.url).query))


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_table(page, c: int, timeout_s: float = 60) -> None:
    page.wait_for_function(TABLE_HAS, arg=[f"intervened (c={c})"], polling=10, timeout=timeout_s * 1000)


def slider_steps(page, start: int, n: int) -> list[float]:
    """n single ArrowRight presses, each timed from the keypress to the new value's table."""
    slider = page.get_by_role("slider")
    out = []
    for i in range(n):
        slider.focus()
        t = time.perf_counter()
        page.keyboard.press("ArrowRight")
        wait_table(page, start + i + 1)
        out.append((time.perf_counter() - t) * 1000)
        page.wait_for_timeout(150)  # a person's pause between presses
    return out


def slider_value(page) -> int:
    el = page.get_by_role("slider")
    raw = el.get_attribute("aria-valuenow") or page.locator("[data-testid=stSliderThumbValue]").first.inner_text()
    return int(float(raw))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--burst", type=int, default=5)
    ap.add_argument("--target", default=DEFAULT_TARGET)
    ap.add_argument("--tiny", action="store_true", help="the tiny test backend: the app's and browser's share alone")
    ap.add_argument("--sweep", action="store_true", help="also time the steps with a sweep running")
    ap.add_argument("--pollers", type=int, default=3)
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "slider"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    log = shots / "server.log"
    server = app = None
    url = ""
    rows: list[tuple[str, str]] = []
    stop_polling = threading.Event()
    jid = None
    try:
        server, url = start_server(log, ["--tiny"] if args.tiny else [])
        # a sweep left unfinished in cache/jobs resumes when the server starts: it would run under
        # the "quiet" figures, so cancel it (and say so)
        for j in requests.get(url + "/api/jobs", timeout=60).json()["jobs"]:
            if j["status"] in ("queued", "running"):
                requests.post(url + f"/api/jobs/{j['id']}/cancel", timeout=60)
                say(f"cancelled job {j['id']} left unfinished by an earlier run")
        say("server up; asking for the target's selection")
        t = time.time()
        targets = {x["name"]: x for x in requests.get(url + "/api/targets", timeout=60).json()["targets"]}
        tgt = targets[args.target]
        sel = requests.post(url + "/api/targets/select", json={"target": args.target}, timeout=1800).json()
        feats = ",".join(str(r["feature"]) for r in sel["features"])
        rows.append(
            ("warm-up: the target's selection from the server (not a browser figure), s", f"{time.time() - t:.1f}")
        )
        c0 = int(tgt["intervention"]["c"])
        app, app_url = start_streamlit(url, shots / "app.log")
        link = f"{app_url}/Clamp_explorer?" + urlencode(
            {"target": args.target, "features": feats, "mode": tgt["intervention"]["mode"], "c": c0}
        )
        say(f"app up; opening {link[:120]}…")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.perf_counter()
            page.goto(link)
            wait_table(page, c0, 300)
            first = time.perf_counter() - t
            settle(page, 300)
            rows.append(
                ("first open of the explorer (link with features): goto -> probability table, s", f"{first:.2f}")
            )
            rows.append(("... -> page settled (curve, heat map), s", f"{time.perf_counter() - t:.2f}"))
            full_screenshot(page, shots / "clamp_explorer.png")
            page.set_viewport_size({"width": 1400, "height": 1000})

            say("first open done; slider steps")
            steps = slider_steps(page, c0, args.steps)
            rows.append(
                (f"slider step, keypress -> new numbers, p50 ({len(steps)} steps)", f"{statistics.median(steps):.0f}")
            )
            rows.append(("slider step, p95", f"{pct(steps, 0.95):.0f}"))
            rows.append(("slider step, max", f"{max(steps):.0f}"))

            settle(page, 60)
            v0 = slider_value(page)
            page.get_by_role("slider").focus()
            t = time.perf_counter()
            for _ in range(args.burst):
                page.keyboard.press("ArrowRight")
                page.wait_for_timeout(30)
            want = v0 + args.burst
            try:
                wait_table(page, want, 60)
                burst_ms = f"{(time.perf_counter() - t) * 1000:.0f}"
            except Exception:
                burst_ms = "never"
            settle(page, 60)
            page.wait_for_timeout(500)
            got_slider = slider_value(page)
            got_url = query(page).get("c")
            ok = got_slider == want and got_url == str(want)
            rows.append((f"{args.burst} rapid presses (30 ms apart) -> table at c={want}, ms", burst_ms))
            rows.append(
                (
                    "... no press lost (slider, URL)",
                    f"{'yes' if ok else 'NO'} (slider {got_slider}, URL {got_url}, wanted {want})",
                )
            )

            say("burst done; question switch")
            sel_box = page.locator("[data-testid=stSelectbox]").filter(has_text="Question (")
            sel_box.click()
            options = page.get_by_role("option")
            options.nth(1).wait_for(timeout=10_000)
            q_before = query(page).get("q")
            t = time.perf_counter()
            options.nth(1).click()
            # the new question's numbers: the table's caption names the question it scored
            page.wait_for_function(
                NEW_CAPTION, arg=[f"Question {q_before} ·", f"c = {want} ·"], polling=10, timeout=120_000
            )
            to_table = time.perf_counter() - t
            settle(page, 120)
            rows.append(("question switch -> the new question's probability table, s", f"{to_table:.2f}"))
            rows.append(("question switch -> page settled (curve, heat map), s", f"{time.perf_counter() - t:.2f}"))

            say("known filter")
            t = time.perf_counter()
            page.get_by_text("Only questions the model knows").click()
            settle(page, 600)
            rows.append(
                ("'Only questions the model knows' ticked -> page settled, s", f"{time.perf_counter() - t:.2f}")
            )
            full_screenshot(page, shots / "clamp_known.png")
            page.set_viewport_size({"width": 1400, "height": 1000})

            if args.sweep:
                say("sweep")
                job = requests.post(
                    url + "/api/jobs",
                    json={
                        "target": args.target,
                        "thresholds": [0.01, 0.003],
                        "ns": [10, 25, 50],
                        "values": [100, 200, 300],
                        "loss_tokens": 2000,
                    },
                    timeout=60,
                )
                job.raise_for_status()
                jid = job.json()["id"]

                def poll() -> None:
                    s = requests.Session()
                    while not stop_polling.is_set():
                        for path in (f"/api/jobs/{jid}", "/api/health"):
                            try:
                                s.get(url + path, timeout=30)
                            except requests.RequestException:
                                pass
                        stop_polling.wait(1.0)

                threads = [threading.Thread(target=poll, daemon=True) for _ in range(args.pollers)]
                for th in threads:
                    th.start()
                time.sleep(5)  # the sweep is under way
                status = requests.get(url + f"/api/jobs/{jid}", timeout=30).json()
                cur = slider_value(page)
                steps2 = slider_steps(page, cur, args.steps)
                status2 = requests.get(url + f"/api/jobs/{jid}", timeout=30).json()
                stop_polling.set()
                requests.post(url + f"/api/jobs/{jid}/cancel", timeout=30)
                rows.append(
                    (
                        f"with a sweep running and {args.pollers} clients polling: slider step p50",
                        f"{statistics.median(steps2):.0f}",
                    )
                )
                rows.append(("... p95", f"{pct(steps2, 0.95):.0f}"))
                rows.append(
                    (
                        "... sweep state during the steps",
                        f"{status['status']} {status['done']}/"
                        f"{status['total']} -> {status2['status']} "
                        f"{status2['done']}/{status2['total']}",
                    )
                )
            try:
                st = requests.get(url + "/api/info", timeout=30).json().get("lock_stats")
                if st:
                    rows.append(
                        (
                            "longest model-lock hold in the whole run (server's lock_stats), s",
                            f"{st.get('max_hold_s', float('nan')):.2f} ({st.get('longest')})",
                        )
                    )
            except Exception:
                pass
            browser.close()
    finally:
        stop_polling.set()
        if jid:
            try:
                requests.post(url + f"/api/jobs/{jid}/cancel", timeout=60)
            except requests.RequestException:
                pass
        stop(app)
        stop(server)
    print_table(("measure", "value"), rows)


if __name__ == "__main__":
    main()
