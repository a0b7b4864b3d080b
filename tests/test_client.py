"""The client: a clear message when no server answers, server 4xx surfaced as ServerError.

The 4xx cases run against the real app on the tiny backend, served by uvicorn in a thread.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from unlearn_core.client import (ServerError, ServerUnavailableError, UnlearnClient, ensure_server, is_local)
from unlearn_core.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny):
    """(url, token) of the app with a bearer token, in a uvicorn thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: tiny, token="tok-123"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    UnlearnClient(url, token="tok-123").wait_ready(timeout=60)
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
    with pytest.raises(ServerError) as e:
        c.activations("hi", sae="nope")
    assert e.value.status == 404 and "unknown SAE" in e.value.message
    with pytest.raises(ServerError) as e:
        c.activations("hi", features=[10 ** 6])
    assert e.value.status == 400 and "out of range" in e.value.message
    with pytest.raises(ServerError) as e:
        c.tokenize("")
    assert e.value.status == 422 and "text" in e.value.message
    with pytest.raises(ServerError) as e:
        c.mcq("no-such-id")
    assert e.value.status == 404
    with pytest.raises(ServerError) as e:
        c.job("nope")
    assert e.value.status == 404
    assert "server error 404" in str(e.value)


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
