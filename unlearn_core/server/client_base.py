"""What the client's modules share: its errors, the schema defaults it sends, and waiting.

Split from :mod:`.client` so its task methods (:mod:`.client_tasks`) can live in their own
module; :mod:`.client` re-exports every name here. Imports no torch (the UI imports it).
"""

from __future__ import annotations

import time
from typing import Any


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


def variant_body(variant: str, body: dict) -> dict:
    """The request body, naming the model variant only when it is not the model as loaded (an older
    server without variants still answers base requests)."""
    return {**body, "variant": variant} if variant and variant != "base" else body


FINISHED = ("done", "cancelled", "failed")


def wait_until_finished(fetch, what: str, counts: tuple[str, str], timeout: float, poll: float) -> dict:
    """Poll ``fetch()`` until its status is finished; a TimeoutError names ``what`` and its progress
    (the two ``counts`` fields) when ``timeout`` seconds pass first. Jobs, tasks and RMU runs share it."""
    end = time.time() + timeout
    while (r := fetch())["status"] not in FINISHED:
        if time.time() > end:
            done, total = (r.get(k) for k in counts)
            raise TimeoutError(f"{what} not finished after {timeout:.0f} s ({done}/{total})")
        time.sleep(poll)
    return r
