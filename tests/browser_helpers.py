"""Helpers for the app tests: a real tiny-backend server process (one per test session, shared by
test_app.py and test_browser.py), a `streamlit run app.py` process, and headless Chromium.

Chromium: Debian's `/usr/bin/chromium` driven by Playwright for Python (no browser download;
see shared/notes/browser-testing.md). When it is missing, browser tests fail in CI (env CI set)
and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_SERVER: dict | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("UNLEARN_TOKEN", "UNLEARN_SERVER_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["UNLEARN_NO_HUB"] = "1"
    env["UNLEARN_OFFLINE"] = "1"
    return env


def stop(p: subprocess.Popen | None) -> None:
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def wait_http(url: str, ok, timeout: float, proc: subprocess.Popen, log: Path, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(
                f"{what} exited with code {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            r = requests.get(url, timeout=2)
            if ok(r):
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{what} not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def start_server(
    log: Path, args: list[str] = (), timeout: float = 600, env: dict | None = None, new_session: bool = False
) -> tuple[subprocess.Popen, str]:
    """`python -m unlearn_core serve` on a free loopback port, waited for until its model is loaded;
    returns (process, URL). Output goes to ``log``; ``env`` is added to ``clean_env()``;
    ``new_session`` puts it in its own process group (to kill it with everything it started)."""
    port = free_port()
    cmd = [sys.executable, "-m", "unlearn_core", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "ab") as f:
        p = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**clean_env(), **(env or {})},
            cwd=ROOT,
            start_new_session=new_session,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/health", lambda r: r.ok and r.json().get("status") == "ok", timeout, p, log, "the server")
    except BaseException:
        stop(p)
        raise
    return p, url


def shared_tiny_server(request, tmp_path_factory) -> dict:
    """`python -m unlearn_core serve --tiny` on a free port, started once per test session.

    Returns {"url", "port", "process", "cache", "log"}; stopped when the session ends.
    """
    global _SERVER
    if _SERVER is not None and _SERVER["process"].poll() is None:
        return _SERVER
    cache = tmp_path_factory.mktemp("app_server_cache")
    log = cache / "server.log"
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=900)
    port = int(url.rsplit(":", 1)[1])
    _SERVER = {"url": url, "port": port, "process": p, "cache": cache, "log": log}
    request.config.add_cleanup(lambda: stop(p))
    return _SERVER


def start_streamlit(server_url: str, log: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` (headless, loopback) pointed at ``server_url``; returns (process, app URL)."""
    port = port or free_port()
    env = clean_env()
    env["UNLEARN_SERVER_URL"] = server_url
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    with open(log, "ab") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/_stcore/health", lambda r: r.ok, 60, p, log, "streamlit")
    except BaseException:
        stop(p)
        raise
    return p, url


def require_chromium() -> str:
    """The Chromium path, or fail (in CI) / skip (elsewhere) saying why."""
    if os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = (
        f"{CHROMIUM} is missing: install it with `apt-get update && apt-get install -y chromium` "
        "(.ci/run does this in CI); no other browser download works on these machines"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)


def settle(page, timeout_s: float = 60.0) -> None:
    """Wait until Streamlit has run the page: its 'running' status widget shows up (it may be too
    quick to be seen) and then stays gone for a moment."""
    page.wait_for_selector("[data-testid='stMain']", timeout=timeout_s * 1000)
    running = "[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidget']"
    try:
        page.wait_for_selector(running, timeout=3000)
    except Exception:  # the run finished before the widget appeared, or has not been needed
        pass
    end = time.time() + timeout_s
    quiet_since = None
    while time.time() < end:
        if page.query_selector(running) is None:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since >= 0.6:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(100)
    raise AssertionError("the app kept running for more than %.0f s" % timeout_s)


def wait_charts(page, timeout_s: float = 20.0) -> int:
    """Wait until every plotly chart on the page has been drawn (Streamlit draws them lazily,
    when they come into view); returns how many there are."""
    containers = page.locator("[data-testid='stPlotlyChart']")
    n = containers.count()
    for i in range(n):
        containers.nth(i).scroll_into_view_if_needed()
        containers.nth(i).locator(".js-plotly-plot").first.wait_for(state="attached", timeout=timeout_s * 1000)
    return n


def full_screenshot(page, path: Path, width: int = 1400, max_height: int = 9000) -> None:
    """Screenshot of the whole page: Streamlit scrolls inside its own container, so the viewport is
    grown to the content's height first."""
    h = page.evaluate(
        "Math.max(...[...document.querySelectorAll('[data-testid=stMain] *, "
        "[data-testid=stAppViewContainer]')].map(e => e.scrollHeight), 600)"
    )
    page.set_viewport_size({"width": width, "height": min(int(h) + 40, max_height)})
    wait_charts(page)
    page.wait_for_timeout(800)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
