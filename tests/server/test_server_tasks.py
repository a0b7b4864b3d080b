"""Long requests as tasks (tiny backend, over HTTP): the synchronous endpoints' limits, the task
route's 202, progress (done/total, ETA), result, cancel, and resume after a stop."""

from __future__ import annotations

import threading
import time

import pytest
from api_helpers import app, client, engine, ok, run_task, wait_done, wait_ok  # noqa: F401 (fixtures)
from fastapi.testclient import TestClient

from unlearn_core.evaluation import metrics as MT
from unlearn_core.server import create_app
from unlearn_core.server.app import stop_work

IV = {"sae": "tiny", "features": [2, 3, 4], "value": 20.0}


@pytest.fixture
def slow(monkeypatch):
    """The real numbers, slower: each window's log-probs takes 30 ms more (a task runs for seconds)."""
    real = MT.target_logprobs
    started = threading.Event()

    def slow_logprobs(*args):
        started.set()
        time.sleep(0.03)
        return real(*args)

    monkeypatch.setattr(MT, "target_logprobs", slow_logprobs)
    return started


@pytest.mark.parametrize(
    "path, body, route",
    [
        ("/api/perplexity", {}, "/api/tasks/perplexity"),  # the default 10k tokens
        ("/api/perplexity", {"n_tokens": 300, "interventions": [IV]}, "/api/tasks/perplexity"),  # 2 passes
        ("/api/loss_added", {"interventions": [IV], "n_tokens": 300}, "/api/tasks/loss_added"),
        ("/api/generate", {"prompt": "a", "interventions": [IV], "max_new_tokens": 60}, "/api/tasks/generate"),
    ],
)
def test_past_the_synchronous_limit_is_a_400_naming_the_task_route(client, path, body, route):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert route in r.json()["detail"] and "GET /api/tasks/{id}" in r.json()["detail"]


def test_within_the_limit_stays_synchronous(client):
    limits = ok(client.get("/api/info"))["limits"]
    assert (limits["sync_eval_tokens"], limits["sync_new_tokens"]) == (512, 96)
    assert ok(client.post("/api/perplexity", json={"n_tokens": 512}))["base"]["n_tokens"] > 0
    assert ok(client.post("/api/generate", json={"prompt": "a", "max_new_tokens": 96}))["intervened"] is None


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/perplexity", {"corpus": "wikitext", "part": "heldout", "n_tokens": 200, "interventions": [IV]}),
        ("/api/loss_added", {"corpus": "webtext", "n_tokens": 200, "interventions": [IV]}),
        ("/api/generate", {"prompt": "Hello", "interventions": [IV], "max_new_tokens": 8}),
        ("/api/features/select", {"threshold": 0.5, "n": 3, "n_tokens": 200}),
        ("/api/features/dashboard", {"feature": 2, "corpora": ["webtext"], "n_tokens": 200, "k": 2}),
        ("/api/features/search", {"text": "hello there", "k": 3}),
    ],
)
def test_a_task_answers_what_the_synchronous_endpoint_answers(client, path, body):
    as_task = run_task(client, path, body)
    sync = ok(client.post(path, json=body))
    as_task.pop("cached", None), sync.pop("cached", None)  # the activation LRU: the second call hits it
    assert as_task == sync


def test_a_long_task_reports_progress_and_an_eta(client, slow):
    task = ok(client.post("/api/tasks/perplexity", json={"corpus": "wikitext", "n_tokens": 3_000}), 202)
    assert task["status"] == "queued" and task["result"] is None
    seen = []
    end = time.time() + 60
    while (j := ok(client.get(f"/api/tasks/{task['id']}")))["status"] != "done":
        assert j["status"] in ("queued", "running") and time.time() < end, j
        if j["status"] == "running" and j["done"] > 0:
            seen.append(j)
        time.sleep(0.1)
    assert seen, "never saw the task running"
    assert all(0 < s["done"] <= s["total"] and s["eta_s"] is not None for s in seen)
    assert j["done"] == j["total"] >= seen[-1]["done"] and j["eta_s"] is None
    assert j["result"]["base"]["n_tokens"] > 2_000
    assert task["id"] in [t["id"] for t in ok(client.get("/api/tasks"))["tasks"]]


def test_cancel_a_running_task_and_unknown_tasks(client, slow):
    task = ok(client.post("/api/tasks/perplexity", json={"corpus": "wikitext", "n_tokens": 20_000}), 202)
    assert slow.wait(30)
    ok(client.post(f"/api/tasks/{task['id']}/cancel"))
    j = wait_done(client, f"/api/tasks/{task['id']}", 30)
    assert j["status"] == "cancelled" and j["result"] is None
    assert client.get("/api/tasks/nope").status_code == 404
    assert client.post("/api/tasks/nope/cancel").status_code == 404


def test_a_failing_task_says_why(client):
    task = ok(client.post("/api/tasks/perplexity", json={"corpus": "nope"}), 202)
    j = wait_done(client, f"/api/tasks/{task['id']}", 30)
    assert j["status"] == "failed" and "unknown corpus" in j["error"]


def test_a_task_stopped_with_the_server_runs_again_after_a_restart(engine, slow):
    body = {"corpus": "wikitext", "n_tokens": 20_000}
    first = create_app(lambda: engine, token="")
    with TestClient(first) as c:
        wait_ok(c)
        task = ok(c.post("/api/tasks/perplexity", json=body), 202)
        assert slow.wait(30)
        stop_work(first)  # what SIGTERM does
        j = ok(c.get(f"/api/tasks/{task['id']}"))
        end = time.time() + 30
        while "interrupted" not in (j["note"] or ""):
            assert time.time() < end, j
            time.sleep(0.1)
            j = ok(c.get(f"/api/tasks/{task['id']}"))
        assert j["status"] == "queued" and j["result"] is None
    again = create_app(lambda: engine, token="")  # the same cache dir
    with TestClient(again) as c:
        wait_ok(c)
        j = wait_done(c, f"/api/tasks/{task['id']}", 900)
        assert j["status"] == "done" and "resumed" in j["note"]
        assert j["result"] == run_task(c, "/api/perplexity", body)  # the same numbers as a fresh task
