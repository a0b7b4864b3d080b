"""The client's task methods: long requests submitted (202), polled, their result returned.

A ``<method>_task`` takes the arguments of the synchronous ``<method>`` (and sends the same body)
and returns what it returns, without its synchronous limit: the app falls back to it when the
synchronous call answers that a task is needed (:func:`.client_transport.needs_task`). A base of
:class:`.client.UnlearnClient`, on the transport's ``request``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Callable

from unlearn_core.server import schemas as S
from unlearn_core.server.client_jobs import wait_until_finished
from unlearn_core.server.client_transport import ServerError, Transport
from unlearn_core.server.client_transport import schema_default as _d

# what a caller wants told of a task's progress while ``run_task`` waits (each poll's task record):
# the app draws a bar with the ETA. A context variable, not a client attribute: one client serves
# every browser session of the app, each in its own thread.
TASK_PROGRESS: ContextVar[Callable[[dict], None] | None] = ContextVar("task_progress", default=None)


def _as_task(name: str, why: str):
    """The method ``<name>_task``: ``self.<name>(*args, task=True, **kwargs)`` (``why``: what the
    task allows that the synchronous request does not)."""

    def method(self, *args, **kwargs) -> dict:
        return getattr(self, name)(*args, task=True, **kwargs)

    method.__name__ = method.__qualname__ = f"{name}_task"
    method.__doc__ = f"``{name}`` as a task ({why})."
    return method


class TaskMethods(Transport):
    """One method per task kind; each waits for the task and returns its result."""

    def submit_task(self, kind: str, body: dict) -> dict:
        return self.request("POST", f"/api/tasks/{kind}", body)

    def task(self, task_id: str) -> dict:
        return self.request("GET", f"/api/tasks/{task_id}")

    def cancel_task(self, task_id: str) -> dict:
        return self.request("POST", f"/api/tasks/{task_id}/cancel")

    def run_task(self, kind: str, body: dict, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        """Submit a task, wait for it, and return its result (a ServerError when it fails)."""
        task_id = self.submit_task(kind, body)["id"]
        tell = TASK_PROGRESS.get()

        def fetch() -> dict:
            t = self.task(task_id)
            if tell is not None:
                tell(t)
            return t

        t = wait_until_finished(fetch, f"task {task_id}", ("done", "total"), timeout, poll)
        if t["status"] != "done":
            raise ServerError(400, f"task {task_id} {t['status']}: {t.get('error') or ''}".strip())
        return t["result"]

    def post(self, path: str, kind: str, body: dict, task: bool = False) -> dict:
        """POST ``body`` to ``path``, or (``task``) run the same body as the task ``kind``."""
        return self.run_task(kind, body) if task else self.request("POST", path, body)

    # -- each ``<method>_task``: ``<method>(..., task=True)``, the same arguments and body

    loss_added_task = _as_task("loss_added", "no synchronous limit on n_tokens")
    perplexity_task = _as_task("perplexity", "no synchronous limit on n_tokens")
    generate_task = _as_task("generate", "no synchronous limit on max_new_tokens")
    dashboard_task = _as_task("dashboard", "statistics neither cached nor shipped, of any size")
    search_task = _as_task("search", "a background's statistics neither cached nor shipped, of any size")
    select_task = _as_task("select", "statistics neither cached nor shipped, a target's question scores; any size")
    select_target_task = _as_task("select_target", "statistics and descriptions of any size")
    demo_task = _as_task("demo", "any max_scan up to the schema's, statistics of any size")

    # -- questions (a GET page synchronously, a body as a task)

    def questions_task(
        self,
        set: str = _d(S.QuestionsKnownRequest, "set"),
        known: bool = True,
        limit: int = _d(S.QuestionsKnownRequest, "limit"),
        offset: int = _d(S.QuestionsKnownRequest, "offset"),
        strict: bool = _d(S.QuestionsKnownRequest, "strict"),
    ) -> dict:
        """``questions(known=True)`` as the task ``questions_known`` (any number of questions whose
        known status is not cached yet; progress per question). Without ``known`` there is no
        limit, so no task: that is a ValueError."""
        if not known:
            raise ValueError("a page without the known filter needs no task: use questions()")
        body = {"set": set, "limit": limit, "offset": offset, "strict": strict}
        return self.run_task("questions_known", body)
