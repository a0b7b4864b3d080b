"""Unlearning targets: list, define in the app, delete, their selection, and the guided demo."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from unlearn_core.server import schemas as S
from unlearn_core.server import target_api as TA
from unlearn_core.server.convert import on_variant, resolve_sae
from unlearn_core.server.deps import State
from unlearn_core.server.state import ServerState

router = APIRouter(tags=["targets"])


@router.get("/targets", response_model=S.TargetList)
def targets(state: State) -> S.TargetList:
    """The unlearning targets (built-in, the server's targets file, those defined in the app), each
    with the forget corpus this server would select on (the target's own, or its labelled fallback)."""
    return S.TargetList(**TA.list_targets(state.engine()))


@router.post("/targets", response_model=S.TargetOut, status_code=201)
def targets_create(req: S.TargetCreateRequest, state: State) -> S.TargetOut:
    """Define a target from the app: its forget corpus (documents) and forget questions (rows in
    the WMDP schema), named retain corpora and question sets, selection and default intervention.
    Saved under ``<cache_dir>/targets/<name>/``; 400 with the row and the fix for a bad question,
    409 when the name is taken. Question ids get a content digest (``<id>-<digest>``)."""
    try:
        return S.TargetOut(**TA.create_target(state, req))
    except TA.TargetExistsError as e:
        raise HTTPException(409, str(e)) from None


@router.delete("/targets/{name}", response_model=S.TargetDeleted)
def targets_delete(name: str, state: State) -> S.TargetDeleted:
    """Delete a target defined in the app (403 for built-in and targets-file ones)."""
    try:
        return S.TargetDeleted(**TA.delete_target(state, name))
    except TA.TargetProtectedError as e:
        raise HTTPException(403, str(e)) from None


def compute_targets_select(
    state: ServerState, req: S.TargetSelectRequest, sync: bool = False
) -> S.TargetSelectResponse:
    """The target's selection; without ``sync`` (the task ``targets_select``) no synchronous limit."""

    def compute() -> S.TargetSelectResponse:
        sae = resolve_sae(state.engine(), req.sae)
        out = TA.select(
            state,
            req.target,
            sae,
            n=req.n,
            threshold=req.threshold,
            describe=req.describe,
            method=req.method,
            sync=sync,
        )
        return S.TargetSelectResponse(**out)

    return on_variant(state, req.variant, compute)


@router.post("/targets/select", response_model=S.TargetSelectResponse)
def targets_select(req: S.TargetSelectRequest, state: State) -> S.TargetSelectResponse:
    """The target's selection: by default its own method (format-matched frequency, search,
    attribution or fisher), or ``method``; with a threshold and no method, retain frequency (the
    max over the retain corpora) < threshold ranked by forget frequency; says which corpora (and,
    for attribution and fisher, which train-half questions) were used. Statistics, known statuses
    or attribution/fisher scores not cached yet, or neither cached nor shipped past
    ``SYNC_STATS_TOKENS``, or more than ``SYNC_DESCRIPTIONS`` uncached descriptions, are a 409 naming
    ``POST /api/tasks/targets_select``."""
    return compute_targets_select(state, req, sync=True)


def compute_demo(state: ServerState, req: S.DemoRequest) -> S.DemoResponse:
    """The guided demo without the synchronous limits (the task ``demo``)."""
    return S.DemoResponse(**TA.run_demo(state, req.target, req.max_scan))


@router.post("/demo", response_model=S.DemoResponse)
def demo(req: S.DemoRequest, state: State) -> S.DemoResponse:
    """The guided demo: the target's default intervention, a known forget question it flips
    and a known retain question that stays right (the lock is taken per question).

    Synchronous up to ``max_scan`` = ``SYNC_DEMO_SCAN`` (4: ~10 s on the embedded model; the default
    60 is a task), more is a 400, and statistics of the target's corpora neither cached nor shipped
    past ``SYNC_STATS_TOKENS`` a 409; both name ``POST /api/tasks/demo`` (the same body, progress
    per question checked)."""
    TA.check_demo(state, req.target, req.max_scan)
    return compute_demo(state, req)
