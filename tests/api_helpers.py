"""Shared by the in-process server tests (FastAPI TestClient on the tiny backend): helpers, and
module-scoped fixtures (a test module imports them, and gets its own tiny engine and cache)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from unlearn_core.model.tiny import tiny_engine
from unlearn_core.server import create_app


def wait_ok(c: TestClient, timeout: float = 60) -> None:
    end = time.time() + timeout
    while c.get("/api/health").json()["status"] != "ok":
        assert time.time() < end, "model did not load"
        time.sleep(0.05)


def ok(r, code: int = 200) -> dict:
    assert r.status_code == code, r.text
    return r.json()


def wait_done(client, path: str, timeout: float = 90, poll: float = 0.1) -> dict:
    """GET ``path`` until its status is final (a job or an RMU run)."""
    end = time.time() + timeout
    while True:
        j = ok(client.get(path))
        if j["status"] in ("done", "failed", "cancelled"):
            return j
        assert time.time() < end, j
        time.sleep(poll)


def wait_job(client, job_id: str, timeout: float = 90) -> dict:
    return wait_done(client, f"/api/jobs/{job_id}", timeout)


TASK_KIND = {
    "/api/perplexity": "perplexity",
    "/api/loss_added": "loss_added",
    "/api/generate": "generate",
    "/api/features/select": "features_select",
    "/api/features/dashboard": "features_dashboard",
    "/api/features/search": "features_search",
    "/api/questions": "questions_known",  # GET with known=true; the task takes its parameters as a body
    "/api/demo": "demo",
    "/api/targets/select": "targets_select",
}


def run_task(client, path: str, body: dict, timeout: float = 900) -> dict:
    """What ``POST path`` answers, as a task: submitted (202), polled, its result (past the
    synchronous endpoints' limits)."""
    task = ok(client.post(f"/api/tasks/{TASK_KIND[path]}", json=body), 202)
    done = wait_done(client, f"/api/tasks/{task['id']}", timeout)
    assert done["status"] == "done", done
    return done["result"]


def answer(client, path: str, body: dict, timeout: float = 900) -> dict:
    """What ``POST path`` answers: synchronously, or, when the answer is a synchronous limit naming
    the task route (uncached statistics or descriptions), through that task (the same result)."""
    r = client.post(path, json=body)
    if r.status_code in (400, 409) and f"POST /api/tasks/{TASK_KIND.get(path)}" in r.text:
        return run_task(client, path, body, timeout)
    return ok(r)


@pytest.fixture(scope="module")
def engine(tmp_path_factory, shared_data):
    return tiny_engine(cache_dir=str(tmp_path_factory.mktemp("server_cache")))


@pytest.fixture(scope="module")
def app(engine):
    return create_app(lambda: engine, token="", allow_test_options=True)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        wait_ok(c)
        yield c


@pytest.fixture
def lock(app):
    """Direct engine calls in tests take the server's lock, like every request does."""
    return app.state.server.lock


GEO = "mmlu:high_school_geography"  # short questions: fit the tiny model's 512-token context


def small_job(**kw) -> dict:
    """A sweep job small enough for the tiny backend (``kw`` overrides any field)."""
    spec = {
        "thresholds": [0.5],
        "ns": [1, 2],
        "values": [10.0, 50.0],
        "forget_set": "wmdp-bio",
        "side_effect_sets": [GEO],
        "known": False,
        "question_limit": 2,
        "selection_tokens": 200,
        "loss_corpus": "webtext",
        "loss_tokens": 100,
    }
    return {**spec, **kw}
