"""Evaluation jobs: sweeps over (retain threshold, N, clamp value), resumable after a crash.

Why on disk, line by line: a sweep can take hours on the real model, and the server may be
killed at any time. Layout under ``<cache_dir>/jobs/<job_id>/``:

* ``spec.json``     the validated spec, model namespace and creation time (atomic write); a
  spec naming a target is stored *resolved* (its corpora, question sets and strict_known
  filled in), so a resumed job runs exactly what was submitted even if the targets change;
  a spec stored before targets existed reads as before (retain_corpora empty means
  [retain_corpus], strict_known absent means false);
* ``results.jsonl`` one JSON line per finished configuration, flushed and fsynced at once;
  the clean baseline is the row with ``config == "none"``;
* ``status.json``   written once the job ends (done / cancelled / failed). No status file
  means unfinished: on startup such jobs (for the loaded model) are queued again and every
  configuration already in ``results.jsonl`` is skipped, so nothing is lost or computed twice.
  A torn last line (killed mid-write) is dropped and the file rewritten before appending.

One worker thread runs one job at a time. It takes the model lock in short steps (one batch of
windows, one question with up to 8 configurations; see ``state.run_steps``), never for a whole
job, and as background work: every waiting HTTP request goes first.

Progress: a job reports its ``phase`` (known filter, feature statistics, loss baseline,
baseline, configurations). The rate and ETA count only the configurations phase of this run:
the setup before it (known filter, statistics, the clean baseline) is paid once, so counting it
made the ETA wrong at the start and drift as the run went on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_core.core import cache as C

log = logging.getLogger("unlearn_core.server.jobs")

BASELINE = "none"
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FINAL = ("done", "cancelled", "failed")


def config_key(threshold: float, n: int, value: float, mode: str | None = None) -> str:
    """A configuration's key; ``mode`` only in jobs that run several modes side by side."""
    return f"t={threshold:.10g}|n={n}|c={value:.10g}" + (f"|{mode}" if mode else "")


def job_modes(spec: dict) -> list[str]:
    return list(spec.get("modes") or [spec.get("mode") or "clamp"])


def job_variants(spec: dict) -> list[str]:
    return [v for v in spec.get("variants") or [] if v != "base"]


@dataclass
class Job:
    id: str
    spec: dict
    namespace: str
    created: float
    status: str = "queued"
    results: list[dict] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    note: str | None = None
    done_at_start: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    phase: str | None = None  # what the worker is doing now (running jobs)
    phase_started: float | None = None  # when this run's configurations phase began
    setup_s: float | None = None  # how long this run's setup took (known filter, statistics, baseline)
    work_done: int = 0  # configurations computed in this run's configurations phase ...
    last_work: float | None = None  # ... the last one finished at
    empty_left: int = 0  # configurations left with no feature to clamp (no work: not in the rate or ETA)
    tasks: list[dict] = field(default_factory=list)  # this run's Ray tasks (ray_backend.TaskResult.record)
    stage_done: int = 0  # lock steps done in the current stage (stage_progress.StageProgress) ...
    stage_total: int = 0  # ... of those announced so far
    stage_started: float | None = None

    @property
    def total(self) -> int:
        s = self.spec
        return 1 + len(s["thresholds"]) * len(s["ns"]) * len(s["values"]) * len(job_modes(s)) + len(job_variants(s))

    @property
    def done(self) -> int:
        return len(self.results)

    def rate_per_s(self) -> float | None:
        """Configurations per second in this run's configurations phase (setup excluded; None
        until one configuration has been computed there)."""
        if self.phase_started is None or self.last_work is None:
            return None
        dt = self.last_work - self.phase_started
        return self.work_done / dt if self.work_done > 0 and dt > 0 else None

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left: the configurations still to compute at the phase's rate, less the time
        already spent on the next ones (configurations finish in groups that share one pass)."""
        rate = self.rate_per_s()
        if not rate or self.status not in ("queued", "running"):
            return None
        left = max(0, self.total - self.done - self.empty_left)
        since = (time.time() if now is None else now) - self.last_work
        return max(0.0, left / rate - since) if left else 0.0

    def summary(self, now: float | None = None) -> dict:
        rate = self.rate_per_s()
        return {
            "id": self.id,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "rate_per_min": rate * 60 if rate else None,
            "eta_s": self.eta_s(now),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "note": self.note,
            "phase": self.phase if self.status == "running" else None,
            "setup_s": self.setup_s,
            "stage_done": self.stage_done if self.status == "running" else None,
            "stage_total": self.stage_total if self.status == "running" else None,
            "stage_eta_s": self.stage_eta(now),
        }

    def stage_eta(self, now: float | None = None) -> float | None:
        """Seconds left in the current stage at its own rate (None before its first step)."""
        if self.status != "running" or self.stage_started is None or self.stage_done <= 0 or self.stage_total <= 0:
            return None
        rate = self.stage_done / max(1e-9, (time.time() if now is None else now) - self.stage_started)
        return round(max(0, self.stage_total - self.stage_done) / rate, 1)

    def detail(self) -> dict:
        return {**self.summary(), "spec": self.spec, "results": list(self.results), "tasks": list(self.tasks)}


class JobStore:
    """Files of every job; each write is atomic or an fsynced append."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, job_id: str) -> Path:
        if not JOB_ID_RE.match(job_id):
            raise KeyError(f"no job {job_id!r}")
        return self.root / job_id

    def create(self, spec: dict, namespace: str) -> Job:
        job = Job(
            id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8],
            spec=spec,
            namespace=namespace,
            created=time.time(),
        )
        C.atomic_write_json(
            self.dir(job.id) / "spec.json", {"id": job.id, "spec": spec, "namespace": namespace, "created": job.created}
        )
        return job

    def append(self, job: Job, row: dict) -> None:
        with open(self.dir(job.id) / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_results(self, job_id: str) -> list[dict]:
        """Valid rows, first occurrence of each config; a torn or junk line is dropped and the file fixed."""
        return C.read_rows(self.dir(job_id) / "results.jsonl", lambda r: r["config"], f"job {job_id}")

    def finish(self, job: Job, status: str) -> None:
        job.status, job.finished = status, time.time()
        C.atomic_write_json(
            self.dir(job.id) / "status.json", {"status": status, "error": job.error, "finished": job.finished}
        )

    def load_all(self) -> list[Job]:
        jobs = []
        if not self.root.is_dir():
            return jobs
        for d in sorted(self.root.iterdir()):
            meta = C.read_json(d / "spec.json") if d.is_dir() and JOB_ID_RE.match(d.name) else None
            if not isinstance(meta, dict) or "spec" not in meta:
                continue
            job = Job(
                id=d.name, spec=meta["spec"], namespace=meta.get("namespace", ""), created=float(meta.get("created", 0))
            )
            job.results = self.read_results(job.id)
            st = C.read_json(d / "status.json")
            if isinstance(st, dict) and st.get("status") in FINAL:
                job.status, job.error, job.finished = st["status"], st.get("error"), st.get("finished")
            jobs.append(job)
        return sorted(jobs, key=lambda j: j.created)
