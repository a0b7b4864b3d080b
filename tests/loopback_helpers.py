"""What the tests against a local fake web service share: the threaded server on 127.0.0.1 (a free
port) it runs on, and an environment in which the code under test reaches that fake directly."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

# read by the code under test: a key, an offline flag or a proxy would change what it sends where
NETWORK_ENV = (
    "NEURONPEDIA_URL",
    "NEURONPEDIA_API_KEY",
    "UNLEARN_CACHE_DIR",
    "UNLEARN_OFFLINE",
    "HF_HUB_OFFLINE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def loopback_env(monkeypatch) -> None:
    """Isolate a test from the machine's environment: no key, no offline flags, no cache folder, no
    proxies, and loopback exempt from any proxy."""
    for name in NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 serving ``handler`` from a daemon thread, between
    ``start()`` and ``stop()``; ``url`` is its address."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
