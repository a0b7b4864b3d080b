"""Tasks: the long requests (perplexity, loss added, generation, feature statistics, the known
filter, the guided demo) run in the background: ``POST /api/tasks/<kind>`` with the synchronous
endpoint's body (``questions_known``: the GET's parameters as a body) answers 202 with the task;
``GET /api/tasks/{id}`` reports ``done``/``total`` steps (questions for ``questions_known``),
the ETA and, once done, the result (the synchronous endpoint's response body)."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import APIRouter, Depends, Request

from unlearn_core.server import schemas as S
from unlearn_core.server.convert import on_variant
from unlearn_core.server.routers.features import compute_dashboard, compute_search, compute_select
from unlearn_core.server.routers.metrics import compute_loss_added, compute_perplexity
from unlearn_core.server.routers.questions import compute_questions_known
from unlearn_core.server.routers.targets import compute_demo, compute_targets_select
from unlearn_core.server.routers.text import compute_generate
from unlearn_core.server.state import ServerState
from unlearn_core.server.tasks import TaskRunner, task_kind

router = APIRouter(tags=["tasks"])


def _varied(compute: Callable[[ServerState, Any], Any]) -> Callable[[ServerState, Any], Any]:
    return lambda state, req: on_variant(state, req.variant, lambda: compute(state, req))


# kind -> (its request model, what computes the response)
KINDS: dict[str, tuple[type, Callable[[ServerState, Any], Any]]] = {
    "perplexity": (S.PerplexityRequest, _varied(compute_perplexity)),
    "loss_added": (S.LossAddedRequest, _varied(compute_loss_added)),
    "generate": (S.GenerateRequest, compute_generate),
    "features_select": (S.SelectRequest, _varied(compute_select)),
    "features_dashboard": (S.DashboardRequest, _varied(compute_dashboard)),
    "features_search": (S.SearchRequest, _varied(compute_search)),
    "questions_known": (S.QuestionsKnownRequest, compute_questions_known),
    "demo": (S.DemoRequest, compute_demo),
    "targets_select": (S.TargetSelectRequest, compute_targets_select),
}
assert tuple(KINDS) == S.TASK_KINDS
SYNC_PATHS = {
    "perplexity": "POST /api/perplexity",
    "loss_added": "POST /api/loss_added",
    "generate": "POST /api/generate",
    "features_select": "POST /api/features/select",
    "features_dashboard": "POST /api/features/dashboard",
    "features_search": "POST /api/features/search",
    "questions_known": "GET /api/questions?known=true",
    "demo": "POST /api/demo",
    "targets_select": "POST /api/targets/select",
}


def task_kinds() -> dict[str, Callable[[ServerState, dict], dict]]:
    """What the ``TaskRunner`` runs per kind (the body validated again: a resumed task's too)."""
    return {kind: task_kind(model, compute) for kind, (model, compute) in KINDS.items()}


def get_tasks(request: Request) -> TaskRunner:
    return request.app.state.tasks


Tasks = Annotated[TaskRunner, Depends(get_tasks)]


def _submit_route(kind: str, model: type) -> None:
    def submit(req: model, tasks: Tasks) -> S.TaskOut:  # type: ignore[valid-type]
        return S.TaskOut(**tasks.submit(kind, req.model_dump(exclude_unset=True)).summary())

    submit.__annotations__ = {"req": model, "tasks": Tasks, "return": S.TaskOut}  # the kind's own body
    submit.__name__ = f"submit_{kind}_task"
    submit.__doc__ = (
        f"What {SYNC_PATHS[kind]} computes, without its synchronous limit, as a task: "
        "202 with the task; poll GET /api/tasks/{task_id} for progress and the result."
    )
    router.add_api_route(f"/tasks/{kind}", submit, methods=["POST"], response_model=S.TaskOut, status_code=202)


for _kind, (_model, _) in KINDS.items():
    _submit_route(_kind, _model)


@router.get("/tasks", response_model=S.TaskList)
def list_tasks(tasks: Tasks) -> S.TaskList:
    """The tasks this server holds in memory (the newest ended ones, and every unfinished one)."""
    return S.TaskList(tasks=[S.TaskOut(**t.summary()) for t in sorted(tasks.tasks.values(), key=lambda t: t.created)])


@router.get("/tasks/{task_id}", response_model=S.TaskOut)
def get_task(task_id: str, tasks: Tasks) -> S.TaskOut:
    """A task's status, progress (done/total steps, ETA) and, once done, its result."""
    return S.TaskOut(**tasks.get(task_id).summary())


@router.post("/tasks/{task_id}/cancel", response_model=S.TaskOut)
def cancel_task(task_id: str, tasks: Tasks) -> S.TaskOut:
    """Cancel a task: at once when queued, at its next lock step when running."""
    return S.TaskOut(**tasks.cancel(task_id).summary())
