"""The client's long requests: tasks (202, then polled), evaluation jobs and RMU runs.

:class:`LongRequests` adds them to :class:`.client_transport.Transport`; :class:`.client.UnlearnClient`
builds on it. Each method returns the decoded JSON response, and the waits share one polling loop.
"""

from __future__ import annotations

import time

from unlearn_core.server import schemas as S
from unlearn_core.server.client_transport import ServerError, Transport, schema_default, with_variant

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

    def submit_task(self, kind: str, body: dict) -> dict:
        return self.request("POST", f"/api/tasks/{kind}", body)

    def task(self, task_id: str) -> dict:
        return self.request("GET", f"/api/tasks/{task_id}")

    def cancel_task(self, task_id: str) -> dict:
        return self.request("POST", f"/api/tasks/{task_id}/cancel")

    def run_task(self, kind: str, body: dict, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        """Submit a task, wait for it, and return its result (a ServerError when it fails)."""
        task_id = self.submit_task(kind, body)["id"]
        t = wait_until_finished(lambda: self.task(task_id), f"task {task_id}", ("done", "total"), timeout, poll)
        if t["status"] != "done":
            raise ServerError(400, f"task {task_id} {t['status']}: {t.get('error') or ''}".strip())
        return t["result"]

    def loss_added_task(
        self,
        interventions: list[dict],
        corpus: str = _d(S.LossAddedRequest, "corpus"),
        n_tokens: int = _d(S.LossAddedRequest, "n_tokens"),
        variant: str = "base",
    ) -> dict:
        """``loss_added`` as a task (no synchronous limit on n_tokens)."""
        return self.run_task(
            "loss_added",
            with_variant(variant, {"corpus": corpus, "interventions": interventions, "n_tokens": n_tokens}),
        )

    def perplexity_task(
        self,
        corpus: str = _d(S.PerplexityRequest, "corpus"),
        part: str = _d(S.PerplexityRequest, "part"),
        interventions: list[dict] | None = None,
        n_tokens: int = _d(S.PerplexityRequest, "n_tokens"),
        variant: str = "base",
    ) -> dict:
        """``perplexity`` as a task (no synchronous limit on n_tokens)."""
        return self.run_task(
            "perplexity",
            with_variant(
                variant, {"corpus": corpus, "part": part, "interventions": interventions or [], "n_tokens": n_tokens}
            ),
        )

    def generate_task(
        self,
        prompt: str,
        interventions: list[dict] | None = None,
        max_new_tokens: int = _d(S.GenerateRequest, "max_new_tokens"),
        temperature: float = _d(S.GenerateRequest, "temperature"),
        seed: int = _d(S.GenerateRequest, "seed"),
        variant: str = "base",
    ) -> dict:
        """``generate`` as a task (no synchronous limit on max_new_tokens)."""
        return self.run_task(
            "generate",
            {
                "prompt": prompt,
                "interventions": interventions or [],
                "max_new_tokens": max_new_tokens,
                "variant": variant,
                "temperature": temperature,
                "seed": seed,
            },
        )

    # -- jobs

    def submit_job(self, spec: dict) -> dict:
        return self.request("POST", "/api/jobs", spec)

    def jobs(self) -> dict:
        return self.request("GET", "/api/jobs")

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/api/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def wait_job(self, job_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(lambda: self.job(job_id), f"job {job_id}", ("done", "total"), timeout, poll)

    # -- RMU runs (model variants rmu:<name>)

    def train_rmu(self, name: str, target: str = _d(S.RMUTrainRequest, "target"), **hyper) -> dict:
        return self.request("POST", "/api/rmu", {"name": name, "target": target, **hyper})

    def rmu_runs(self) -> list[dict]:
        return self.request("GET", "/api/rmu")["runs"]

    def rmu_run(self, name: str) -> dict:
        return self.request("GET", f"/api/rmu/{name}")

    def cancel_rmu(self, name: str) -> dict:
        return self.request("POST", f"/api/rmu/{name}/cancel")

    def wait_rmu(self, name: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(lambda: self.rmu_run(name), f"RMU run {name}", ("step", "steps"), timeout, poll)
