"""The client: a clear message when no server answers, server 4xx surfaced as ServerError.

The 4xx cases run against the real app on the tiny backend, served by uvicorn in a thread.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from unlearn_core.server import create_app
from unlearn_core.server.client import (
    ServerError,
    ServerUnavailableError,
    UnlearnClient,
    ensure_server,
    is_local,
    needs_task,
)


def assert_refused(status: int, says: str | None, call, *args, **kwargs) -> ServerError:
    """``call(*args, **kwargs)`` raises a ServerError with ``status`` whose message contains ``says``."""
    with pytest.raises(ServerError) as e:
        call(*args, **kwargs)
    assert e.value.status == status and (says is None or says in e.value.message), (e.value.status, e.value.message)
    return e.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny):
    """(url, token) of the app with a bearer token, in a uvicorn thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(lambda: tiny, token="tok-123"), host="127.0.0.1", port=port, log_level="warning")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    UnlearnClient(url, token="tok-123").wait_ready(timeout=900)
    yield url, "tok-123"
    server.should_exit = True
    t.join(10)


def test_unreachable_server_says_how_to_start_one(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    c = UnlearnClient(url)
    for call in (c.info, c.health, lambda: c.tokenize("x"), lambda: c.mcq("q")):
        with pytest.raises(ServerUnavailableError) as e:
            call()
        msg = str(e.value)
        assert url in msg and "python -m unlearn_core serve" in msg and "scripts/run.sh" in msg
    with pytest.raises(ServerUnavailableError):
        ensure_server(url, auto_start=False)


def test_url_and_token_from_environment(monkeypatch):
    monkeypatch.setenv("UNLEARN_SERVER_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("UNLEARN_TOKEN", "from-env")
    c = UnlearnClient()
    assert c.base_url == "http://127.0.0.1:9999" and c.token == "from-env"
    assert "from-env" not in repr(c)
    monkeypatch.delenv("UNLEARN_SERVER_URL")
    assert UnlearnClient().base_url == "http://127.0.0.1:8765"


def test_is_local():
    assert is_local("http://127.0.0.1:8765") and is_local("http://localhost:1")
    assert not is_local("http://example.org:8765")


def test_4xx_surfaced_as_server_error(served):
    url, token = served
    c = UnlearnClient(url, token=token)
    assert c.info()["status"] == "ok"
    assert_refused(404, "unknown SAE", c.activations, "hi", sae="nope")
    assert_refused(400, "out of range", c.activations, "hi", features=[10**6])
    assert_refused(422, "text", c.tokenize, "")
    assert_refused(404, None, c.mcq, "no-such-id")
    assert "server error 404" in str(assert_refused(404, None, c.job, "nope"))


def test_missing_token_is_401(served):
    url, _ = served
    with pytest.raises(ServerError) as e:
        UnlearnClient(url, token="").info()
    assert e.value.status == 401 and "tok-123" not in e.value.message
    assert UnlearnClient(url, token="").health()["auth_required"] is True  # health needs no token


def test_ensure_server_returns_ready_client(served):
    url, token = served
    t = time.time()
    c = ensure_server(url, auto_start=True, token=token)  # already running: nothing is started
    assert c.process is None and time.time() - t < 10
    assert c.tokenize("ab")["n_tokens"] == 3


def test_target_methods(served):
    url, token = served
    c = UnlearnClient(url, token=token)
    ts = c.targets()
    assert ts["default"] == "bio-basics" and "sherlock" in {t["name"] for t in ts["targets"]}
    with pytest.raises(ServerError) as e:  # a fresh server: the statistics are more than a synchronous request computes
        c.select_target("bio-basics", n=3)
    assert needs_task(e.value) and "POST /api/tasks/targets_select" in e.value.message
    sel = c.select_target_task("bio-basics", n=3)
    assert c.select_target("bio-basics", n=3) == sel  # computed by the task: now answered synchronously
    from unlearn_core.evaluation.targets import get_target

    assert len(sel["features"]) == 3 and sel["retain_corpora"] == list(get_target("bio-basics").retain_corpora)
    assert c.select_target("bio-basics", n=3, threshold=0.999)["threshold"] == 0.999
    d = c.demo("bio-basics", max_scan=2)
    assert d["target"] == "bio-basics" and d["n_checked_forget"] == 2 and d["summary"]
    q = c.questions("quiz:retain!overlaps_bio", known=True, strict=True, limit=2)
    assert q["known"] is True and q["strict"] is True
    assert_refused(404, "unknown target", c.demo, "nope")


def test_create_and_delete_a_target(served):
    url, token = served
    c = UnlearnClient(url, token=token)
    qs = [{"question": f"Client question {i}?", "choices": ["w", "x", "y", "z"], "answer": "B"} for i in range(3)]
    body = dict(documents=["Client corpus text about a topic. " * 30], questions=qs, description="from the client")
    try:
        t = c.create_target("client-made", n=4, c=300, **body)
        assert t["name"] == "client-made" and t["defined_in_app"] is True
        assert t["selection"]["n"] == 4 and t["intervention"]["c"] == 300.0 and t["retain_questions"] == ["quiz:retain"]
        assert "client-made" in {x["name"] for x in c.targets()["targets"]}
        page = c.questions(t["forget_questions"])
        assert page["total"] == 3 and {q["answer"] for q in page["questions"]} == {1}  # "B" -> 1
        assert_refused(409, "exists already", c.create_target, "client-made", **body)
        assert_refused(
            400,
            "file paths are not accepted",
            c.create_target,
            "client-other",
            retain_questions=["/tmp/x.json"],
            **body,
        )
        assert c.delete_target("client-made") == {"deleted": "client-made"}
    finally:
        try:
            c.delete_target("client-made")
        except ServerError:
            pass
    assert "client-made" not in {x["name"] for x in c.targets()["targets"]}
    assert_refused(403, None, c.delete_target, "sherlock")
    assert_refused(404, None, c.delete_target, "no such/target")


def test_task_methods_give_the_synchronous_answers_past_its_limits(served):
    url, token = served
    c = UnlearnClient(url, token=token)
    iv = {"sae": "tiny", "features": [2, 3], "value": 20.0}
    with pytest.raises(ServerError) as e:  # past the synchronous limit: the error names the task route
        c.loss_added([iv], corpus="webtext", n_tokens=1_000)
    assert e.value.status == 400 and "/api/tasks/loss_added" in e.value.message
    la = c.loss_added_task([iv], corpus="webtext", n_tokens=1_000)
    assert la["n_tokens"] > 900 and la["loss_added"] is not None
    small = c.perplexity("wikitext", interventions=[iv], n_tokens=200)
    assert c.perplexity_task("wikitext", interventions=[iv], n_tokens=200) == small
    g = c.generate_task("Hello", interventions=[iv], max_new_tokens=60)
    assert isinstance(g["base"], str) and isinstance(g["intervened"], str)
    with pytest.raises(ServerError) as e:  # a failed task is a ServerError with its reason
        c.run_task("perplexity", {"corpus": "nope", "n_tokens": 100})
    assert "unknown corpus" in e.value.message
