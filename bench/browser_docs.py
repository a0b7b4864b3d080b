"""The documentation site as a reader sees it: built with ``mkdocs build --strict``, served on
loopback, opened in headless Chromium. Follows every link of the site to another page of it (a
broken one is counted, never skipped), times each page from navigation to the load event, and
takes screenshots of a few pages. Prints one table.

    .venv/bin/python bench/browser_docs.py [--shots tests/artifacts/docs]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urldefrag, urljoin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser_helpers import launch_chromium  # noqa: E402
from common import print_table  # noqa: E402

SHOTS = {
    "": "home",
    "concepts/persistent/": "persistent",
    "results/": "results_index",
    "results/persist_bio-basics/": "results_persist",
    "reference/cli/": "cli_reference",
    "app/robustness/": "app_robustness",
}


def build(site: Path) -> float:
    t = time.time()
    subprocess.run(
        [str(ROOT / ".venv/bin/mkdocs"), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    return time.time() - t


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the table is the output, not one line per request
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def crawl(page, base: str, shots: Path) -> dict:
    """Every page reachable from the home page by the site's own links; their load times; the
    links that answered an error; console errors."""
    seen, todo, times, broken, errors = set(), [base], {}, [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        t = time.time()
        resp = page.goto(url, wait_until="load")
        times[url] = time.time() - t
        if resp is None or resp.status >= 400:
            broken.append(url)
            continue
        rel = url[len(base) :]
        if rel in SHOTS:
            page.screenshot(path=str(shots / f"docs_{SHOTS[rel]}.png"), full_page=False)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            target = urldefrag(urljoin(url, href))[0]
            if target.startswith(base) and not target.endswith((".png", ".json", ".html.gz")):
                todo.append(target if target.endswith(("/", ".html")) else target + "/")
    return {"times": times, "broken": broken, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", default=str(ROOT / "tests" / "artifacts" / "docs"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        build_s = build(site)
        httpd, base = serve(site)
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                got = crawl(page, base, shots)
                browser.close()
        finally:
            httpd.shutdown()
    times = sorted(got["times"].values())
    rows = [
        ("mkdocs build --strict (s)", f"{build_s:.1f}"),
        ("pages reached by links", str(len(times))),
        ("broken links (pages)", str(len(got["broken"]))),
        ("console errors", str(len(got["errors"]))),
        ("page load, median (s)", f"{times[len(times) // 2]:.2f}"),
        ("page load, slowest (s)", f"{times[-1]:.2f}"),
    ]
    print_table(("what", "value"), rows)
    for url in got["broken"]:
        print("broken:", url)
    for e in got["errors"][:10]:
        print("console:", e)
    slowest = max(got["times"], key=got["times"].get)
    print(f"slowest page: {slowest}; screenshots in {shots}")


if __name__ == "__main__":
    main()
