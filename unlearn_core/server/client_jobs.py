"""The client's long requests: tasks (202, then polled), evaluation jobs and RMU runs.

:class:`LongRequests` adds them to :class:`.client_transport.Transport`; :class:`.client.UnlearnClient`
builds on it. Each method returns the decoded JSON response, and the waits share one polling loop.
"""

from __future__ import annotations

import time

from unlearn_core.server import schemas as S
from unlearn_core.server.client_transport import Transport, schema_default

_d = schema_default  # short, for the method signatures below

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


class LongRequests(Transport):
    """Tasks, jobs and RMU runs: submitted, polled, waited for, cancelled."""

    # -- tasks (long requests: 202, then polled; the result is the synchronous endpoint's answer)

    # -- jobs

    def submit_job(self, spec: dict) -> dict:
        return self.request("POST", "/api/jobs", spec)

    def jobs(self) -> dict:
        return self.request("GET", "/api/jobs")

    def job(self, job_id: str) -> dict:
        """The job's status, progress (``done``/``total`` configurations, ``eta_s``) and, once done,
        its result."""
        return self.request("GET", f"/api/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        """Stops the job at its next check (between configurations); a queued or paused job ends at
        once, since no worker would see the flag."""
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def wait_job(self, job_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(lambda: self.job(job_id), f"job {job_id}", ("done", "total"), timeout, poll)

    # -- RMU runs (model variants rmu:<name>)

    def train_rmu(self, name: str, target: str = _d(S.RMUTrainRequest, "target"), **hyper) -> dict:
        return self.request("POST", "/api/rmu", {"name": name, "target": target, **hyper})

    def rmu_runs(self) -> list[dict]:
        return self.request("GET", "/api/rmu")["runs"]

    def rmu_run(self, name: str) -> dict:
        """The run's status, ``step``/``steps``, ``eta_s`` and last losses (``last``)."""
        return self.request("GET", f"/api/rmu/{name}")

    def cancel_rmu(self, name: str) -> dict:
        return self.request("POST", f"/api/rmu/{name}/cancel")

    def wait_rmu(self, name: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(lambda: self.rmu_run(name), f"RMU run {name}", ("step", "steps"), timeout, poll)
