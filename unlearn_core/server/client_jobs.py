"""The client's long requests: tasks (202, then polled), evaluation jobs, attack bench runs and RMU runs.

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

    # -- attack bench runs (is the knowledge gone, or only hidden?)

    def start_attack(
        self,
        target: str = _d(S.AttackSpec, "target"),
        defences: list[str] | None = None,
        attacks: list[str] | None = None,
        probes: str | None = None,
        part: str | None = None,
        **test,
    ) -> dict:
        """Queue a run of the attack bench (``defences``/``attacks`` None: the server's defaults,
        ``["default"]`` and every attack that needs no trained weights); returns its status."""
        body = {"target": target, "probes": probes, "part": part, **test}
        body.update({k: v for k, v in (("defences", defences), ("attacks", attacks)) if v is not None})
        return self.request("POST", "/api/attacks", body)

    def attack_runs(self) -> dict:
        """``{"runs": [...], "attacks": {name: threat model}, "defences": [...]}``."""
        return self.request("GET", "/api/attacks")

    def attack_run(self, run_id: str) -> dict:
        """The run's status and progress: ``done``/``total`` rows, ``current`` row, ``eta_s``."""
        return self.request("GET", f"/api/attacks/{run_id}")

    def attack_result(self, run_id: str) -> dict:
        """The bench's result with every row finished so far (``complete`` once done)."""
        return self.request("GET", f"/api/attacks/{run_id}/result")

    def cancel_attack(self, run_id: str) -> dict:
        return self.request("POST", f"/api/attacks/{run_id}/cancel")

    def resume_attack(self, run_id: str) -> dict:
        """Queue a cancelled or failed run again; its finished rows are not computed again."""
        return self.request("POST", f"/api/attacks/{run_id}/resume")

    def wait_attack(self, run_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(
            lambda: self.attack_run(run_id), f"attack run {run_id}", ("done", "total"), timeout, poll
        )

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

    # -- persistent SAE-guided runs (model variants persist:<name>)

    def train_persist(self, name: str, target: str = _d(S.PersistTrainRequest, "target"), **settings) -> dict:
        return self.request("POST", "/api/persist", {"name": name, "target": target, **settings})

    def persist_runs(self) -> list[dict]:
        return self.request("GET", "/api/persist")["runs"]

    def persist_run(self, name: str) -> dict:
        """The run's status, ``step``/``steps``, ``eta_s``, last losses and the loss curve (``history``)."""
        return self.request("GET", f"/api/persist/{name}")

    def cancel_persist(self, name: str) -> dict:
        return self.request("POST", f"/api/persist/{name}/cancel")

    def wait_persist(self, name: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(
            lambda: self.persist_run(name), f"persistent run {name}", ("step", "steps"), timeout, poll
        )
