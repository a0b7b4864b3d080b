"""The job worker (``JobRunner``) and how a submitted spec is checked and resolved.

One worker thread runs one job at a time (:mod:`.sweep` does the work; :mod:`.job_store` keeps
the files). See :mod:`.job_store` for the on-disk layout and how jobs resume after a crash.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from unlearn_core.model.engine import Engine
from unlearn_core.server.access import check_corpus, trusted_files
from unlearn_core.server.job_store import FINAL, Job, JobStore  # noqa: F401 (re-exported)
from unlearn_core.server.schemas import JobSpec
from unlearn_core.server.state import ServerState, cancel_item, lookup
from unlearn_core.server.sweep import LOSS_CTX, Cancelled, Stopping, Sweep  # noqa: F401 (re-exported)

log = logging.getLogger("unlearn_core.server.jobs")


class JobRunner:
    """The single background worker and the in-memory view of every job."""

    def __init__(self, state: ServerState, allow_delay: bool = False):
        self.state = state
        self.allow_delay = allow_delay
        self.store: JobStore | None = None
        self.jobs: dict[str, Job] = {}
        self.queue: queue.Queue[str] = queue.Queue()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.pool = None  # the Ray workers (ray_backend.RayPool), started by the first job that needs them

    def ray_pool(self):
        """The Ray workers when the engine's settings ask for them (``job_backend = "ray"``), else None."""
        engine = self.state.engine()
        s = engine.settings
        if s.job_backend != "ray":
            return None
        if self.pool is None:
            from unlearn_core.evaluation.ray_backend import EngineRecipe, RayPool

            self.pool = RayPool(EngineRecipe.of(engine), s.ray_workers, s.ray_address).start()
        return self.pool

    def close_pool(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()

    # -- lifecycle

    def start(self, engine: Engine) -> None:
        """Called once the engine is loaded: re-queue unfinished jobs, start the worker."""
        self.store = JobStore(Path(engine.settings.cache_dir) / "jobs")
        ns = engine.cache_namespace()
        for job in self.store.load_all():
            if job.status not in FINAL:
                if job.namespace == ns:
                    job.status, job.note = "queued", f"resumed with {job.done} configuration(s) already done"
                    self.queue.put(job.id)
                else:
                    job.status, job.note = "paused", f"created for model {job.namespace!r}; not resumed here"
            self.jobs[job.id] = job
        self._thread = threading.Thread(target=self._loop, name="job-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for j in list(self.jobs.values()):
            out[j.status] = out.get(j.status, 0) + 1
        return out

    # -- API

    def _store(self) -> JobStore:
        self.state.engine()  # wait for loading: the store exists once the engine does
        for _ in range(100):
            if self.store is not None:
                return self.store
            time.sleep(0.05)
        raise RuntimeError("job store not ready")

    def submit(self, spec: JobSpec) -> Job:
        d = self.prepare(spec)
        store = self._store()
        job = store.create(d, self.state.engine().cache_namespace())
        with self._lock:
            self.jobs[job.id] = job
        self.queue.put(job.id)
        return job

    def prepare(self, spec: JobSpec) -> dict:
        """The spec as it will be stored, every name checked now (a bad one fails the request)."""
        engine = self.state.engine()
        if spec.delay_per_config and not self.allow_delay:
            raise ValueError("delay_per_config is a test option, only honoured by a --tiny server")
        sae = spec.sae or engine.default_sae
        if sae not in engine.saes:
            raise KeyError(f"unknown SAE {sae!r}; loaded: {sorted(engine.saes)}")
        data_dir = engine.settings.data_dir
        d = resolve_spec(engine, spec)
        trusted = trusted_files(engine)[1]
        for c in [d["forget_corpus"], *d["retain_corpora"]] + ([d["loss_corpus"]] if spec.loss_tokens else []):
            check_corpus(c, data_dir, trusted)
        for s in [d["forget_set"], *d["side_effect_sets"]]:
            self.state.question_set(s)  # unknown sets fail now (404), not in the worker
        check_variants(engine, [*(d.get("variants") or []), d.get("model_variant") or "base"])
        d["sae"] = sae
        return d

    def get(self, job_id: str) -> Job:
        return lookup(self.jobs, job_id, "job")

    def cancel(self, job_id: str) -> Job:
        return cancel_item(self.get(job_id), ("queued", "paused"), self._cancel_idle)

    def _cancel_idle(self, job: Job) -> None:
        job.error = None
        self._store().finish(job, "cancelled")

    # -- worker

    def _loop(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    job_id = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                job = self.jobs.get(job_id)
                if job is None or job.status != "queued":
                    continue
                if not self.run_job(job):
                    return
        finally:
            self.close_pool()

    def run_job(self, job: Job) -> bool:
        """Run one job to its end (done, cancelled or failed); False when stopping (it stays
        unfinished on disk and resumes on the next start)."""
        job.status, job.started, job.done_at_start = "running", time.time(), job.done
        job.phase_started = job.setup_s = job.last_work = None
        job.work_done = job.empty_left = 0
        job.tasks = []
        try:
            with self.state.background():  # every waiting HTTP request gets the model first
                Sweep(self, job).run()
            self.store.finish(job, "done")
        except Cancelled:
            self.store.finish(job, "cancelled")
        except Stopping:
            job.status = "queued"
            return False
        except Exception as e:  # noqa: BLE001 - a job failure must not kill the worker
            log.exception("job %s failed", job.id)
            job.error = f"{type(e).__name__}: {e}"
            self.store.finish(job, "failed")
        return True


def check_variants(engine: Engine, variants: list[str]) -> None:
    """Every variant is a finished run (RMU or persistent) of the loaded model (else a clear 4xx,
    not a failed job)."""
    from unlearn_core.training.variants import check

    check(engine, variants)


def resolve_spec(engine: Engine, spec: JobSpec) -> dict:
    """The spec as stored: with a target, the fields the request did not give come from it
    (schemas.TARGET_RULE); retain_corpora is never empty and strict_known is a bool."""
    from unlearn_core.evaluation.targets import forget_corpus_for, question_specs
    from unlearn_core.server.access import server_targets

    d = spec.model_dump()
    given = spec.model_fields_set
    if spec.target:
        targets = server_targets(engine)
        if spec.target not in targets:
            raise KeyError(f"unknown target {spec.target!r}; known: {sorted(targets)}")
        t = targets[spec.target]
        forget_set, retain_sets = question_specs(t)
        fill = {
            "forget_set": forget_set,
            "side_effect_sets": retain_sets,
            "strict_known": t.strict_known,
            "loss_corpus": t.loss_corpus,
            "selection_tokens": t.selection.tokens,
        }
        if "forget_corpus" not in given:
            fill["forget_corpus"] = forget_corpus_for(t, engine.settings.data_dir)[0]
        if not given & {"retain_corpora", "retain_corpus"}:
            fill["retain_corpora"] = list(t.retain_corpora)
        d.update({k: v for k, v in fill.items() if k not in given or (k == "strict_known" and d[k] is None)})
    d["retain_corpora"] = d["retain_corpora"] or [d["retain_corpus"]]
    d["strict_known"] = bool(d["strict_known"])
    JobSpec(**d)  # what the worker will read back: a target with too many sets or corpora fails now (400)
    return d
