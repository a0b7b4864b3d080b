"""Persistent SAE-guided unlearning runs: queue, list, progress with the loss curve, cancel
(finished runs are model variants persist:<name>)."""

from __future__ import annotations

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.deps import Persist, State

router = APIRouter(tags=["persist"])


def _out(run) -> S.RMURunOut:
    return S.RMURunOut(**run.summary())


@router.post("/persist", response_model=S.RMURunOut, status_code=202)
def train_persist(req: S.PersistTrainRequest, runner: Persist) -> S.RMURunOut:
    """Queue a persistent run (resumes a cancelled or unfinished run of the same settings)."""
    over = req.model_dump(exclude={"name", "target", "delay_per_step"}, exclude_none=True)
    return _out(runner.submit(req.name, req.target, over, req.delay_per_step))


@router.get("/persist", response_model=S.RMURunList)
def list_persist(state: State, runner: Persist) -> S.RMURunList:
    """Every persistent run this server knows (finished ones are model variants: persist:<name>)."""
    state.engine()
    return S.RMURunList(runs=[_out(r) for r in runner.runs.values()])


@router.get("/persist/{name}", response_model=S.RMURunOut)
def get_persist(name: str, state: State, runner: Persist) -> S.RMURunOut:
    state.engine()
    return _out(runner.get(name))


@router.post("/persist/{name}/cancel", response_model=S.RMURunOut)
def cancel_persist(name: str, state: State, runner: Persist) -> S.RMURunOut:
    state.engine()
    return _out(runner.cancel(name))
