"""RMU training runs: queue, list, progress, cancel (finished runs are model variants rmu:<name>)."""

from __future__ import annotations

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.deps import RMU, State

router = APIRouter(tags=["rmu"])


def _out(run) -> S.RMURunOut:
    return S.RMURunOut(**run.summary())


@router.post("/rmu", response_model=S.RMURunOut, status_code=202)
def train_rmu(req: S.RMUTrainRequest, rmu_runner: RMU) -> S.RMURunOut:
    """Queue an RMU training run (resumes a cancelled or unfinished run of the same settings)."""
    over = req.model_dump(exclude={"name", "target", "delay_per_step"}, exclude_none=True)
    return _out(rmu_runner.submit(req.name, req.target, over, req.delay_per_step))


@router.get("/rmu", response_model=S.RMURunList)
def list_rmu(state: State, rmu_runner: RMU) -> S.RMURunList:
    """Every RMU run this server knows (finished ones are model variants: rmu:<name>)."""
    state.engine()
    return S.RMURunList(runs=[_out(r) for r in rmu_runner.runs.values()])


@router.get("/rmu/{name}", response_model=S.RMURunOut)
def get_rmu(name: str, state: State, rmu_runner: RMU) -> S.RMURunOut:
    state.engine()
    return _out(rmu_runner.get(name))


@router.post("/rmu/{name}/cancel", response_model=S.RMURunOut)
def cancel_rmu(name: str, state: State, rmu_runner: RMU) -> S.RMURunOut:
    state.engine()
    return _out(rmu_runner.cancel(name))
