"""The client's transport: one HTTP request with the token, one retry on a dropped connection,
and explicit errors; plus what every request body is built with (the schemas' defaults, the model
variant).

Apart from :mod:`.client` so that the long-request methods (:mod:`.client_jobs`) and the
synchronous ones share it without importing each other.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8765"
START_HINT = (
    "start one with `python -m unlearn_core serve` (or `bash scripts/run.sh`), "
    "or point UNLEARN_SERVER_URL at a running server"
)


class ServerUnavailableError(ConnectionError):
    """No server answers at the URL."""


class ServerError(RuntimeError):
    """The server answered with an error status; ``message`` is its explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"server error {status}: {message}")
        self.status, self.message = status, message


def needs_task(e: BaseException) -> bool:
    """Whether ``e`` is a synchronous limit (400 or 409) whose message names the task route that
    answers the same request without it (``POST /api/tasks/<kind>``)."""
    return isinstance(e, ServerError) and e.status in (400, 409) and "POST /api/tasks/" in e.message


def schema_default(model: type, field: str) -> Any:
    """The default of ``field`` in the request schema ``model`` (a default factory is called):
    one source for every default the client sends, so a default changed in the schema reaches it."""
    return model.model_fields[field].get_default(call_default_factory=True)


def _default_url() -> str:
    return (os.environ.get("UNLEARN_SERVER_URL") or DEFAULT_URL).rstrip("/")


def with_variant(variant: str, body: dict) -> dict:
    """The request body, naming the model variant only when it is not the model as loaded (an older
    server without variants still answers base requests)."""
    return {**body, "variant": variant} if variant and variant != "base" else body


class Transport:
    """The connection to one server: its URL, the token (never shown), timeouts and a session."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 3.0,
    ):
        self.base_url = (base_url or _default_url()).rstrip("/")
        self.token = token if token is not None else os.environ.get("UNLEARN_TOKEN") or None
        self.timeout = (connect_timeout, timeout)
        self.session = requests.Session()
        self.process: subprocess.Popen | None = None  # set when ensure_server started the server

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({self.base_url!r})"

    def request(
        self, method: str, path: str, json: Any = None, params: dict | None = None, timeout: float | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.base_url + path
        # A kept-alive connection the server has since closed fails at once; one retry on a fresh
        # connection is safe for every call except the ones that change job or attack-run state.
        retries = 0 if (method == "POST" and path.startswith(("/api/jobs", "/api/attacks"))) else 1
        try:
            while True:
                try:
                    r = self.session.request(
                        method,
                        url,
                        json=json,
                        params=params,
                        headers=headers,
                        timeout=(self.timeout[0], timeout) if timeout else self.timeout,
                    )
                    break
                except requests.ConnectionError:
                    if retries == 0:
                        raise
                    retries -= 1
                    self.session.close()
        except requests.exceptions.InvalidJSONError as e:
            raise ValueError(f"request body is not valid JSON (NaN or infinity?): {e}") from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise ServerUnavailableError(
                f"no workbench server answers at {self.base_url} ({type(e).__name__}); {START_HINT}"
            ) from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServerError(r.status_code, str(detail))
        return r.json()
