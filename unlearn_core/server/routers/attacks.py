"""The attack bench: start a run, list runs, progress, result (partial while it runs), cancel, resume."""

from __future__ import annotations

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.deps import Attacks, State

router = APIRouter(tags=["attacks"])


def _out(run) -> S.AttackRunOut:
    return S.AttackRunOut(**run.summary())


@router.post("/attacks", response_model=S.AttackRunOut, status_code=202)
def start_attack(spec: S.AttackSpec, attacks: Attacks) -> S.AttackRunOut:
    """Queue a run of the attack bench (every attack against every defence on the target's
    held-out facts); each finished row is kept on disk at once."""
    return _out(attacks.submit(spec))


@router.get("/attacks", response_model=S.AttackRunList)
def list_attacks(state: State, attacks: Attacks) -> S.AttackRunList:
    """Every run this server knows, oldest first, and the attacks and defences it offers."""
    state.engine()
    runs = sorted(attacks.runs.values(), key=lambda r: r.created)
    return S.AttackRunList(
        runs=[_out(r) for r in runs],
        attacks=attacks.offered(),
        defences=["default", "clamp", "gated", "dsg", "none"],
    )


@router.get("/attacks/{run_id}", response_model=S.AttackRunOut)
def get_attack(run_id: str, state: State, attacks: Attacks) -> S.AttackRunOut:
    """A run's status and progress: rows done of total, the row being computed, the ETA."""
    state.engine()
    return _out(attacks.get(run_id))


@router.get("/attacks/{run_id}/result", response_model=S.AttackResult)
def attack_result(run_id: str, state: State, attacks: Attacks) -> S.AttackResult:
    """The bench's result with every row finished so far (``complete`` once the run is done)."""
    state.engine()
    return S.AttackResult(**attacks.get(run_id).result())


@router.post("/attacks/{run_id}/cancel", response_model=S.AttackRunOut)
def cancel_attack(run_id: str, state: State, attacks: Attacks) -> S.AttackRunOut:
    """Stop the run at its next lock hold (a queued run ends at once); finished rows stay."""
    state.engine()
    return _out(attacks.cancel(run_id))


@router.post("/attacks/{run_id}/resume", response_model=S.AttackRunOut, status_code=202)
def resume_attack(run_id: str, state: State, attacks: Attacks) -> S.AttackRunOut:
    """Queue a cancelled or failed run again: its finished rows are kept, not computed again."""
    state.engine()
    return _out(attacks.resume(run_id))
