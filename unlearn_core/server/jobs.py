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
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_core.core import cache as C
from unlearn_core.model.engine import Engine
from unlearn_core.method.interventions import GATED_MODES, Intervention
from unlearn_core.server.schemas import JobSpec
from unlearn_core.server.state import (ServerState, check_corpus, clean_nll_chunked, feature_stats_chunked, finite, nll_chunked,
                    run_steps, score_chunked, select_questions, trusted_files)

log = logging.getLogger("unlearn_core.server.jobs")

BASELINE = "none"
LOSS_CTX = 256  # tokens per loss-added window
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FINAL = ("done", "cancelled", "failed")


class Cancelled(Exception):
    pass


class Stopping(Exception):
    """The server is shutting down: leave the job unfinished so it resumes on restart."""


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

    @property
    def total(self) -> int:
        s = self.spec
        return (1 + len(s["thresholds"]) * len(s["ns"]) * len(s["values"]) * len(job_modes(s))
                + len(job_variants(s)))

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
        return {"id": self.id, "status": self.status, "done": self.done, "total": self.total,
                "rate_per_min": rate * 60 if rate else None, "eta_s": self.eta_s(now), "created": self.created,
                "started": self.started, "finished": self.finished, "error": self.error, "note": self.note,
                "phase": self.phase if self.status == "running" else None, "setup_s": self.setup_s}

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
        job = Job(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8], spec=spec, namespace=namespace,
                  created=time.time())
        C.atomic_write_json(self.dir(job.id) / "spec.json",
                            {"id": job.id, "spec": spec, "namespace": namespace, "created": job.created})
        return job

    def append(self, job: Job, row: dict) -> None:
        with open(self.dir(job.id) / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_results(self, job_id: str) -> list[dict]:
        """Valid rows, first occurrence of each config; a torn or junk line is dropped and the file fixed."""
        path = self.dir(job_id) / "results.jsonl"
        if not path.exists():
            return []
        rows, seen, bad = [], set(), False
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                key = row["config"]
            except (json.JSONDecodeError, KeyError, TypeError):
                bad = bad or bool(line.strip())
                continue
            if key in seen:
                bad = True
                continue
            seen.add(key)
            rows.append(row)
        if bad or (path.stat().st_size and not path.read_bytes().endswith(b"\n")):
            log.warning("job %s: dropping a torn or duplicate line in results.jsonl", job_id)
            C.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        return rows

    def finish(self, job: Job, status: str) -> None:
        job.status, job.finished = status, time.time()
        C.atomic_write_json(self.dir(job.id) / "status.json",
                            {"status": status, "error": job.error, "finished": job.finished})

    def load_all(self) -> list[Job]:
        jobs = []
        if not self.root.is_dir():
            return jobs
        for d in sorted(self.root.iterdir()):
            meta = C.read_json(d / "spec.json") if d.is_dir() and JOB_ID_RE.match(d.name) else None
            if not isinstance(meta, dict) or "spec" not in meta:
                continue
            job = Job(id=d.name, spec=meta["spec"], namespace=meta.get("namespace", ""),
                      created=float(meta.get("created", 0)))
            job.results = self.read_results(job.id)
            st = C.read_json(d / "status.json")
            if isinstance(st, dict) and st.get("status") in FINAL:
                job.status, job.error, job.finished = st["status"], st.get("error"), st.get("finished")
            jobs.append(job)
        return sorted(jobs, key=lambda j: j.created)


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
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        if job.status in ("queued", "paused"):
            job.error = None
            self._store().finish(job, "cancelled")
        return job

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
    """Every variant is a finished RMU run of the loaded model (else a clear 4xx, not a failed job)."""
    from unlearn_core.training.rmu import load_delta, variant_name

    for v in variants:
        if v == "base":
            continue
        _, card = load_delta(engine.settings.cache_dir, variant_name(v))
        if card["model"] != engine.model_name:
            raise ValueError(f"{v} was trained on {card['model']!r}, not on the loaded {engine.model_name!r}")


def resolve_spec(engine: Engine, spec: JobSpec) -> dict:
    """The spec as stored: with a target, the fields the request did not give come from it
    (schemas.TARGET_RULE); retain_corpora is never empty and strict_known is a bool."""
    from unlearn_core.features.targets import forget_corpus_for, question_specs
    from unlearn_core.server.state import server_targets

    d = spec.model_dump()
    given = spec.model_fields_set
    if spec.target:
        targets = server_targets(engine)
        if spec.target not in targets:
            raise KeyError(f"unknown target {spec.target!r}; known: {sorted(targets)}")
        t = targets[spec.target]
        forget_set, retain_sets = question_specs(t)
        fill = {"forget_set": forget_set, "side_effect_sets": retain_sets, "strict_known": t.strict_known,
                "loss_corpus": t.loss_corpus, "selection_tokens": t.selection.tokens}
        if "forget_corpus" not in given:
            fill["forget_corpus"] = forget_corpus_for(t, engine.settings.data_dir)[0]
        if not given & {"retain_corpora", "retain_corpus"}:
            fill["retain_corpora"] = list(t.retain_corpora)
        d.update({k: v for k, v in fill.items() if k not in given or (k == "strict_known" and d[k] is None)})
    d["retain_corpora"] = d["retain_corpora"] or [d["retain_corpus"]]
    d["strict_known"] = bool(d["strict_known"])
    JobSpec(**d)  # what the worker will read back: a target with too many sets or corpora fails now (400)
    return d


class Sweep:
    """One job's work: questions, selection statistics, baseline, then every configuration."""

    def __init__(self, runner: JobRunner, job: Job):
        self.runner, self.job, self.state = runner, job, runner.state
        self.spec = JobSpec(**job.spec)
        self.sources: dict[str, tuple[str, list]] = {}  # question-set spec -> (spec, the whole set)
        self.gate_rates: dict[tuple, dict] = {}

    def check(self) -> None:
        if self.runner.stop_event.is_set():
            raise Stopping()
        if self.job.cancel.is_set():
            raise Cancelled()

    def questions(self, name: str) -> list:
        full = self.state.question_set(name).questions
        qs = full[: self.spec.question_limit] if self.spec.question_limit else full
        chosen = select_questions(self.state, qs, self.spec.known, self.check, strict=bool(self.spec.strict_known))[0]
        self.sources[name] = (name, full)  # Ray workers get references into the set, not its texts
        return chosen

    def run(self) -> None:
        from unlearn_core.features.stats import corpus_docs, windows_for
        from unlearn_core.features.targets import retain_frequency

        spec, job = self.spec, self.job
        job.phase = "known filter" if spec.known else "questions"
        sets = {"forget": self.questions(spec.forget_set)}
        for s in spec.side_effect_sets:
            sets[s] = self.questions(s)
        self.check()
        job.phase = "feature statistics"
        fs = feature_stats_chunked(self.state, spec.sae, spec.forget_corpus, spec.selection_tokens,
                                   should_stop=self.check)
        rs = [feature_stats_chunked(self.state, spec.sae, corpus, spec.selection_tokens, should_stop=self.check)
              for corpus in spec.retain_corpora or [spec.retain_corpus]]
        retain_freq = retain_frequency(rs)  # a feature's highest retain frequency
        self.windows, self.clean = [], None
        if spec.loss_tokens:
            job.phase = "loss baseline"
            docs = corpus_docs(self.state.engine(), spec.loss_corpus)
            with self.state.model("loss windows") as engine:
                self.windows = windows_for(engine, docs, spec.loss_tokens, LOSS_CTX)
            self.clean = clean_nll_chunked(self.state, spec.loss_corpus, self.windows, should_stop=self.check)
        done = {r["config"] for r in job.results}
        with self.state.variant(spec.model_variant):  # every hold below: the clamps on top of it
            self.configurations(sets, fs, retain_freq, done)
        for variant in job_variants(job.spec):  # on the driver (Ray workers hold no variant)
            if variant not in done:
                self.check()
                self.finish_config(self.evaluate_variant(sets, variant))

    def configurations(self, sets: dict, fs, retain_freq, done: set[str]) -> None:
        """The clean row and every (threshold, N, clamp, mode) configuration, on the job's model
        variant (the model as loaded unless model_variant names an RMU run)."""
        from unlearn_core.features.stats import select_features

        spec, job = self.spec, self.job
        if BASELINE not in done:
            job.phase = "baseline"
            self.finish_config(self.evaluate(sets, None, BASELINE, None, None, None, []))
        selections = {t: [r["feature"] for r in select_features(fs.freq, retain_freq, t, max(spec.ns))]
                      for t in spec.thresholds}
        modes = job_modes(job.spec)
        tagged = len(modes) > 1  # keys name the mode only when several run side by side

        def key(t, n, v, m):
            return config_key(t, n, v, m if tagged else None)

        job.empty_left = sum(1 for t in spec.thresholds for n in spec.ns for v in spec.values for m in modes
                             if not selections[t][:n] and key(t, n, v, m) not in done)
        # started before the phase's clock (worker start-up is setup); Ray workers hold no variant
        pool = self.runner.ray_pool() if spec.model_variant == "base" else None
        job.phase, job.phase_started = "configurations", time.time()
        job.setup_s = round(job.phase_started - job.started, 3) if job.started else None
        remote = []  # with Ray: (keys, t, n, values, features, configurations) per selection and mode
        for t in spec.thresholds:
            feats = selections[t]
            for n in spec.ns:
                chosen = feats[:n]
                for m in modes:
                    todo = [v for v in spec.values if key(t, n, v, m) not in done]
                    if not todo:
                        continue
                    self.check()
                    keys = [key(t, n, v, m) for v in todo]
                    if not chosen:
                        for k, v in zip(keys, todo):
                            self.finish_config(self.evaluate(sets, None, k, t, n, v, []), work=False)
                        continue
                    tau = self.gate_tau(chosen) if m in GATED_MODES else None
                    ivs = [[Intervention(spec.sae, tuple(chosen), float(v), m, tau)] for v in todo]
                    if pool is not None:
                        remote.append((keys, t, n, todo, chosen, ivs))
                        continue
                    # all clamp values of this selection share the upstream pass (fast path)
                    accs = self.shared_accuracies(sets, ivs)
                    for k, v, iv, acc in zip(keys, todo, ivs, accs):
                        self.finish_config(self.evaluate(sets, iv, k, t, n, v, chosen, acc))
        if remote:
            self.remote_accuracies(pool, sets, remote)

    def evaluate_variant(self, sets: dict, variant: str) -> dict:
        """A model variant's row: accuracy on the same known questions (chosen on the base model)
        and loss added against the base model's clean loss, with the variant's delta applied in
        every hold of the model lock."""
        from unlearn_core.evaluation.mcq import accuracy

        t0 = time.time()
        with self.state.variant(variant):
            accs = {name: finite(accuracy(score_chunked(self.state, qs, None, self.check, variant))) if qs else None
                    for name, qs in sets.items()}
            nll = nll_chunked(self.state, self.windows, None, self.check)[0] if self.spec.loss_tokens else None
        side = {s: accs.get(s) for s in self.spec.side_effect_sets}
        vals = [a for a in side.values() if a is not None]
        return {"config": variant, "threshold": None, "n": None, "value": None, "mode": "rmu", "variant": variant,
                "features": [], "forget_accuracy": accs.get("forget"), "side_effect_accuracy": side,
                "side_effect_mean": sum(vals) / len(vals) if vals else None,
                "loss_added": finite(nll - self.clean) if nll is not None else None,
                "n_questions": {k: len(q) for k, q in sets.items()}, "seconds": round(time.time() - t0, 3),
                "note": None}

    def gate_tau(self, features: list[int]) -> float:
        """The job's tau: given, or calibrated on gate_corpus for this selection (cached on disk)."""
        from unlearn_core.method.gate import DEFAULT_CORPUS, calibrate

        if self.spec.gate is not None:
            return self.spec.gate
        with self.state.model("gate calibration") as engine:
            return calibrate(engine, self.spec.sae, tuple(features), self.spec.gate_corpus or DEFAULT_CORPUS,
                             self.spec.gate_percentile).tau

    def remote_accuracies(self, pool, sets: dict, groups: list[tuple]) -> None:
        """The selections' configurations on the Ray workers; each selection's rows are written
        as soon as all its question shards are in (the same rows as ``shared_accuracies`` gives)."""
        from unlearn_core.evaluation.ray_backend import LossWindows, evaluate_groups

        def finished(g: int, accs: list[dict], nlls: list) -> None:
            keys, t, n, todo, chosen, ivs = groups[g]
            for k, v, iv, acc, nll in zip(keys, todo, ivs, accs, nlls):
                self.finish_config(self.evaluate(sets, iv, k, t, n, v, chosen, acc, nll))

        named = {"forget": self.spec.forget_set, **{s: s for s in sets if s != "forget"}}
        refs = {name: (*self.sources[named[name]], qs) for name, qs in sets.items()}
        loss = None
        if self.spec.loss_tokens and self.windows:  # the same windows as the local path, rebuilt on each worker
            loss = (LossWindows(self.spec.loss_corpus, self.spec.loss_tokens, LOSS_CTX,
                                LossWindows.digest_of(self.windows)), len(self.windows))
        self.job.tasks = evaluate_groups(pool, refs, [g[5] for g in groups], finished, self.check, loss=loss)

    def open_rates(self, sets: dict, iv: Intervention) -> dict:
        """{set: share of its questions whose prompt opens ``iv``'s gate}, once per (features, tau)."""
        from unlearn_core.method.gate import question_rhos

        key = (iv.features, iv.gate)
        if key not in self.gate_rates:
            out = {}
            for name, qs in sets.items():
                rhos: list[float] = []
                for s in range(0, len(qs), 16):  # short holds of the model lock
                    self.check()
                    with self.state.model("gate open rates") as engine:
                        rhos += question_rhos(engine, qs[s : s + 16], iv)
                out[name] = sum(r > iv.gate for r in rhos) / len(rhos) if rhos else None
            self.gate_rates[key] = out
        return self.gate_rates[key]

    def shared_accuracies(self, sets: dict, configs: list) -> list[dict]:
        """Accuracy of every configuration on every set, in steps of one question and up to
        ``CONFIG_STEP`` configurations (one selection's configurations differ only in the value,
        so they go through the fast path's batches of 8 exactly as in one call)."""
        from unlearn_core.evaluation.sweep import ConfigResult, add_step, config_steps

        out = [{} for _ in configs]
        groups = config_steps(len(configs))
        for name, qs in sets.items():
            totals = [ConfigResult(0, 0) for _ in configs]
            run_steps(self.state, ((lambda engine, q=q, idx=idx, totals=totals: add_step(engine, q, configs, idx,
                                                                                          totals))
                                   for q in qs for idx in groups), "configurations", self.check)
            for o, tot in zip(out, totals):
                o[name] = tot.table_accuracy()
        return out

    def finish_config(self, row: dict, work: bool = True) -> None:
        self.runner.store.append(self.job, row)
        self.job.results.append(row)
        if self.job.phase_started is not None:
            if work:
                self.job.work_done += 1
                self.job.last_work = time.time()
            else:
                self.job.empty_left = max(0, self.job.empty_left - 1)
        if self.spec.delay_per_config and self.runner.allow_delay:  # test hook, --tiny servers only
            end = time.time() + self.spec.delay_per_config
            while time.time() < end:
                self.check()
                time.sleep(0.05)

    def evaluate(self, sets: dict, ivs, key: str, t, n, v, features: list[int], accs: dict | None = None,
                 nll: float | None = None) -> dict:
        from unlearn_core.evaluation.mcq import accuracy

        t0 = time.time()
        note = None if ivs or key == BASELINE else "no feature passes the retain threshold: nothing to evaluate"
        if accs is None:  # else computed together with the other clamp values of this selection
            accs = {}
            if ivs or key == BASELINE:
                for name, qs in sets.items():
                    accs[name] = (finite(accuracy(score_chunked(self.state, qs, ivs, self.check, "baseline")))
                                  if qs else None)
        side = {s: accs.get(s) for s in self.spec.side_effect_sets}
        vals = [a for a in side.values() if a is not None]
        loss = None
        on_variant = self.spec.model_variant != "base"
        if self.spec.loss_tokens and key == BASELINE:  # on a variant: the variant's own loss added
            loss = finite(nll_chunked(self.state, self.windows, None, self.check)[0] - self.clean) if on_variant else 0.0
        elif self.spec.loss_tokens and ivs:
            if nll is None:  # else computed on a Ray worker
                nll, _ = nll_chunked(self.state, self.windows, ivs, self.check)
            loss = finite(nll - self.clean)
        gate = {}
        if ivs and ivs[0].gate is not None:  # the share of each set's questions the gate opens on
            gate = {"gate": ivs[0].gate, "gate_open": self.open_rates(sets, ivs[0])}
        return {"config": key, "threshold": t, "n": n, "value": v, "mode": ivs[0].mode if ivs else None, **gate,
                "features": list(features), "forget_accuracy": accs.get("forget"), "side_effect_accuracy": side,
                "side_effect_mean": sum(vals) / len(vals) if vals else None, "loss_added": loss,
                "n_questions": {k: len(q) for k, q in sets.items()}, "seconds": round(time.time() - t0, 3),
                "note": note, "variant": self.spec.model_variant if on_variant else None}
