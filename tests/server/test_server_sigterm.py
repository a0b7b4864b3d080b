"""SIGTERM ends a real server within 10 s whatever it is doing, and its work resumes after a restart.

Before, uvicorn's graceful shutdown waited for every open request: a long one (here a known
filter over a 2,000-question page, minutes on the tiny model) outlived SIGTERM by minutes. Now
the signal stops stepped work at its next lock step (the request ends with a 503), the graceful
wait is bounded, and the job and the task it interrupted run again on the next start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests
from browser_helpers import start_server, stop

GEO = "mmlu:high_school_geography"
LONG_PAGE = {"set": "wmdp-bio", "known": "true", "limit": 2000}  # a known filter: minutes on the tiny model
EXIT_S = 10.0


def post(url: str, path: str, body: dict, code: int) -> dict:
    r = requests.post(url + path, json=body, timeout=30)
    assert r.status_code == code, r.text
    return r.json()


def wait_for(get, ok, timeout: float = 60.0) -> dict:
    end = time.time() + timeout
    while True:
        j = get()
        if ok(j):
            return j
        assert time.time() < end, j
        time.sleep(0.2)


def start(cache: Path) -> tuple[subprocess.Popen, str]:
    # a long synchronous request to be in the middle of: the known filter, its synchronous limit raised
    env = {**os.environ, "UNLEARN_SYNC_KNOWN_QUESTIONS": "100000"}
    return start_server(cache / "server.log", ["--tiny", "--cache-dir", str(cache)], timeout=900, env=env)


def test_sigterm_ends_the_server_within_10_s_and_work_resumes(tmp_path, shared_data):
    p, url = start(tmp_path)
    try:
        job = post(
            url,
            "/api/jobs",
            {
                "thresholds": [0.5],
                "ns": [1],
                "values": [20.0, 50.0],
                "question_limit": 1,
                "known": False,
                "side_effect_sets": [GEO],
                "selection_tokens": 200,
                "loss_tokens": 0,
                "delay_per_config": 30.0,
            },
            201,
        )
        wait_for(
            lambda: requests.get(f"{url}/api/jobs/{job['id']}", timeout=10).json(),
            lambda j: j["status"] == "running" and j["done"] >= 1,
        )  # sleeping 30 s after its first row
        task = post(url, "/api/tasks/perplexity", {"corpus": "wikitext", "n_tokens": 100_000}, 202)
        got: dict = {}

        def long_request():
            try:
                got["status"] = requests.get(url + "/api/questions", params=LONG_PAGE, timeout=600).status_code
            except requests.RequestException as e:
                got["status"] = type(e).__name__

        t = threading.Thread(target=long_request, daemon=True)
        t.start()
        time.sleep(2.0)  # the request is in its known filter
        assert "status" not in got, "the long request ended before SIGTERM: it does not test the shutdown"
        p.send_signal(signal.SIGTERM)
        t0 = time.time()
        try:
            p.wait(EXIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server was still running {EXIT_S:.0f} s after SIGTERM") from None
        assert time.time() - t0 < EXIT_S
        t.join(10)
        assert got.get("status") != 200  # cut short: a 503 or a closed connection, never a full answer
    finally:
        stop(p)
    p, url = start(tmp_path)  # the same cache: the job and the task are queued again
    try:
        j = wait_for(
            lambda: requests.get(f"{url}/api/jobs/{job['id']}", timeout=10).json(),
            lambda j: j["status"] in ("queued", "running", "done"),
        )
        assert "resumed" in (j["note"] or "") and j["done"] >= 1
        k = requests.get(f"{url}/api/tasks/{task['id']}", timeout=10).json()
        assert k["status"] in ("queued", "running", "done") and "resumed" in (k["note"] or "")
    finally:
        stop(p)
