"""Health (no auth) and info: what the server runs, its limits, and how busy it is."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from unlearn_core.method.modes import MODES
from unlearn_core.server import schemas as S
from unlearn_core.server.access import corpus_names, question_set_names
from unlearn_core.server.convert import target_question_sets
from unlearn_core.server.deps import Runner, State, get_token

health_router = APIRouter(tags=["server"])
router = APIRouter(tags=["server"])


@health_router.get("/api/health", response_model=S.HealthResponse)
def health(state: State, token: str | None = Depends(get_token)) -> S.HealthResponse:
    """Liveness without auth: answers while the model is still loading."""
    state.start_loading()
    return S.HealthResponse(
        status=state.status,
        detail=state.error,
        auth_required=bool(token),
        uptime_s=round(time.time() - state.started, 3),
    )


@router.get("/info", response_model=S.InfoResponse)
def info(state: State, runner: Runner) -> S.InfoResponse:
    """The loaded model and SAEs (or status 'loading'), limits, question sets, cache counters."""
    state.start_loading()
    engine = state.engine_if_ready
    out: dict = {
        "status": state.status,
        "detail": state.error,
        "limits": S.Limits(),
        "modes": list(MODES),
        "corpora": corpus_names(),
        "activation_cache": S.CacheStats(**state.acts.stats()),
        "jobs": runner.counts(),
        "lock_stats": S.LockStats(**state.lock.stats.summary()),
    }
    if engine is not None:  # no model forward here, so no lock: /info stays responsive
        out.update(engine.info())
        out["n_ctx"] = engine.model.cfg.n_ctx
        out["question_sets"] = [
            S.QuestionSetInfo(name=n, description=d)
            for n, d in question_set_names(engine.settings.data_dir, target_question_sets(engine))
        ]
    return S.InfoResponse(**out)
