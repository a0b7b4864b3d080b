"""The client's task methods send what their synchronous twins send, to the task route, with the
schemas' defaults, and return the task's result (no server: the transport is replaced)."""

from __future__ import annotations

import inspect

import pytest

from unlearn_core.server import schemas as S
from unlearn_core.server.client import ServerError, UnlearnClient, needs_task, schema_default

# task method -> (its kind, its request schema, the arguments it cannot do without, its synchronous twin)
TASKS = {
    "dashboard_task": ("features_dashboard", "DashboardRequest", {"feature": 1}, "dashboard"),
    "search_task": ("features_search", "SearchRequest", {"text": "x"}, "search"),
    "select_task": ("features_select", "SelectRequest", {}, "select"),
    "questions_task": ("questions_known", "QuestionsKnownRequest", {}, None),
    "demo_task": ("demo", "DemoRequest", {"target": "t"}, "demo"),
    "loss_added_task": ("loss_added", "LossAddedRequest", {"interventions": [{"features": [1]}]}, "loss_added"),
    "perplexity_task": ("perplexity", "PerplexityRequest", {}, "perplexity"),
    "generate_task": ("generate", "GenerateRequest", {"prompt": "p"}, "generate"),
}


def recording_client(calls: list) -> UnlearnClient:
    c = UnlearnClient("http://127.0.0.1:9")

    def request(verb, path, json=None, **kw):
        calls.append((verb, path, json))
        if path.startswith("/api/tasks/") and verb == "POST":
            return {"id": "t1", "status": "queued"}
        return {"status": "done", "done": 1, "total": 1, "result": {"answer": 42}}

    c.request = request
    return c


@pytest.mark.parametrize("method", sorted(TASKS))
def test_a_task_method_submits_its_kind_with_the_schemas_defaults(method):
    kind, name, args, twin = TASKS[method]
    model = getattr(S, name)
    calls: list = []
    assert getattr(recording_client(calls), method)(**args) == {"answer": 42}
    verb, path, body = calls[0]
    assert (verb, path) == ("POST", f"/api/tasks/{kind}") and calls[1][:2] == ("GET", "/api/tasks/t1")
    assert set(body) <= set(model.model_fields)
    for field, value in body.items():
        if field not in args:
            assert value == schema_default(model, field), (method, field)
    if twin:  # the synchronous method sends the same body
        sync: list = []
        getattr(recording_client(sync), twin)(**args)
        assert sync[0][2] == body
    for p in inspect.signature(getattr(UnlearnClient, method)).parameters.values():
        if p.name in model.model_fields and p.default is not inspect.Parameter.empty and p.default is not None:
            assert p.default == schema_default(model, p.name), (method, p.name)


def test_the_questions_task_is_the_known_page():
    calls: list = []
    recording_client(calls).questions_task("quiz:bio", limit=30, strict=True)
    assert calls[0][2] == {"set": "quiz:bio", "limit": 30, "offset": 0, "strict": True}
    with pytest.raises(ValueError, match="needs no task"):
        recording_client([]).questions_task("quiz:bio", known=False)


def test_a_failed_task_is_a_server_error():
    c = UnlearnClient("http://127.0.0.1:9")
    c.request = lambda verb, path, json=None, **kw: (
        {"id": "t1"} if verb == "POST" else {"status": "failed", "error": "unknown corpus", "done": 0, "total": 0}
    )
    with pytest.raises(ServerError, match="unknown corpus"):
        c.demo_task("bio-basics")


def test_needs_task_recognises_a_synchronous_limit():
    assert needs_task(ServerError(409, "... submit it as a task: POST /api/tasks/features_select with ..."))
    assert needs_task(ServerError(400, "... submit it as a task: POST /api/tasks/demo with the same body"))
    assert not needs_task(ServerError(400, "unknown corpus 'x'"))
    assert not needs_task(ServerError(404, "POST /api/tasks/demo"))
    assert not needs_task(ValueError("POST /api/tasks/demo"))


def test_a_waiting_caller_is_told_each_polls_progress():
    """Issue 35, defect 16: the app draws a bar with the ETA from what ``run_task`` is told per poll
    (``TASK_PROGRESS``); without a listener nothing is called, and the listener is per context."""
    from unlearn_core.server.client_tasks import TASK_PROGRESS

    states = iter(
        [
            {"status": "queued", "done": 0, "total": 0},
            {"status": "running", "done": 3, "total": 10, "eta_s": 7.0},
            {"status": "done", "done": 10, "total": 10, "result": {"answer": 42}},
        ]
    )
    c = UnlearnClient("http://127.0.0.1:9")
    c.request = lambda verb, path, json=None, **kw: {"id": "t1"} if verb == "POST" else next(states)
    seen: list = []
    token = TASK_PROGRESS.set(seen.append)
    try:
        assert c.run_task("demo", {"target": "t"}, poll=0.0) == {"answer": 42}
    finally:
        TASK_PROGRESS.reset(token)
    assert [(t["status"], t["done"]) for t in seen] == [("queued", 0), ("running", 3), ("done", 10)]
    assert TASK_PROGRESS.get() is None
