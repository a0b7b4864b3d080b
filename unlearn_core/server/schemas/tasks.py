"""Tasks: long requests run in the background and polled (202 with an id, then progress)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

TASK_KINDS = (
    "perplexity",
    "loss_added",
    "generate",
    "features_select",
    "features_dashboard",
    "features_search",
    "questions_known",
    "demo",
    "targets_select",
)


class TaskOut(BaseModel):
    """A task and, once done, its result: the synchronous endpoint's response body."""

    id: str
    kind: str
    status: Literal["queued", "running", "done", "cancelled", "failed"]
    done: int  # steps done (a step is about one lock hold's worth of work)
    total: int  # steps known so far: it can grow while the task runs
    eta_s: float | None = None  # at this run's rate so far
    created: float
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    note: str | None = None
    result: dict[str, Any] | None = None


class TaskList(BaseModel):
    tasks: list[TaskOut]
