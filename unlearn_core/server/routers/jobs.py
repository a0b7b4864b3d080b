"""Evaluation sweeps (jobs): submit, list, progress and results, cancel."""

from __future__ import annotations

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.deps import Runner, State

router = APIRouter(tags=["jobs"])


@router.post("/jobs", response_model=S.JobCreated, status_code=201)
def submit_job(spec: S.JobSpec, runner: Runner) -> S.JobCreated:
    """Queue a sweep; it runs in the background worker and is persisted per configuration."""
    job = runner.submit(spec)
    return S.JobCreated(id=job.id, status=job.status, total=job.total)


@router.get("/jobs", response_model=S.JobList)
def list_jobs(state: State, runner: Runner) -> S.JobList:
    state.engine()
    return S.JobList(jobs=[S.JobSummary(**j.summary()) for j in sorted(runner.jobs.values(), key=lambda j: j.created)])


@router.get("/jobs/{job_id}", response_model=S.JobDetail)
def get_job(job_id: str, state: State, runner: Runner) -> S.JobDetail:
    state.engine()
    return S.JobDetail(**runner.get(job_id).detail())


@router.post("/jobs/{job_id}/cancel", response_model=S.JobSummary)
def cancel_job(job_id: str, state: State, runner: Runner) -> S.JobSummary:
    state.engine()
    return S.JobSummary(**runner.cancel(job_id).summary())
