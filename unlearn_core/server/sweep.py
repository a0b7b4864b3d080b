"""One sweep's work (``Sweep``): questions, selection statistics, baseline, every configuration.

Why checks everywhere: the worker calls ``check`` before each lock hold, so a cancel or a server
shutdown stops the sweep within one step; a shutdown leaves it unfinished on disk (``Stopping``)
and it resumes on the next start, skipping every configuration already written.
"""

from __future__ import annotations

import time
from typing import Any

from unlearn_core.method.interventions import Intervention
from unlearn_core.method.modes import GATED_MODES
from unlearn_core.server.job_store import BASELINE, Job, config_key, job_modes, job_variants
from unlearn_core.server.schemas import JobSpec
from unlearn_core.server.stage_progress import Announced, StageProgress
from unlearn_core.server.steps import (
    clean_nll_chunked,
    feature_stats_chunked,
    finite,
    nll_chunked,
    nll_step_count,
    run_steps,
    score_chunked,
    score_per_step,
    select_questions,
)

LOSS_CTX = 256  # tokens per loss-added window


class Cancelled(Exception):
    pass


class Stopping(Exception):
    """The server is shutting down: leave the job unfinished so it resumes on restart."""


class Sweep:
    """One job's work: questions, selection statistics, baseline, then every configuration."""

    def __init__(self, runner: Any, job: Job):
        """``runner``: the ``jobs.JobRunner`` (its store, stop event, Ray pool; not imported: it imports this)."""
        self.runner, self.job, self.state = runner, job, runner.state
        self.spec = JobSpec(**job.spec)
        self.sources: dict[str, tuple[str, list]] = {}  # question-set spec -> (spec, the whole set)
        self.gate_rates: dict[tuple, dict] = {}
        self.progress = StageProgress(job, self.check)

    def check(self) -> None:
        if self.runner.stop_event.is_set():
            raise Stopping()
        if self.job.cancel.is_set():
            raise Cancelled()

    def questions(self, names: dict[str, str]) -> dict[str, list]:
        """{key: the set's questions that fit [and are known]}; the stage counts questions settled,
        all sets' announced at once."""
        limit = self.spec.question_limit
        full = {name: self.state.question_set(name).questions for name in names.values()}
        qs = {name: f[:limit] if limit else f for name, f in full.items()}
        self.progress.expect(sum(len(q) for q in qs.values()))
        out = {}
        with self.state.tracked(Announced(self.progress)):
            for key, name in names.items():
                with self.state.per_item(len(qs[name])) as tick:
                    strict = bool(self.spec.strict_known)
                    out[key] = select_questions(self.state, qs[name], self.spec.known, self.check, strict, tick=tick)[0]
                self.sources[name] = (name, full[name])  # Ray workers get references into the set, not its texts
        return out

    def run(self) -> None:
        """Every stage, with each stage's lock steps counted on the job (``StageProgress``)."""
        with self.state.tracked(self.progress):
            self.stages()

    def stages(self) -> None:
        from unlearn_core.evaluation.targets import retain_frequency
        from unlearn_core.features.stats import corpus_docs, windows_for

        spec, job = self.spec, self.job
        self.progress.begin("known filter" if spec.known else "questions")
        sets = self.questions({"forget": spec.forget_set, **{s: s for s in spec.side_effect_sets}})
        self.check()
        self.progress.begin("feature statistics")
        fs = feature_stats_chunked(
            self.state, spec.sae, spec.forget_corpus, spec.selection_tokens, should_stop=self.check
        )
        rs = [
            feature_stats_chunked(self.state, spec.sae, corpus, spec.selection_tokens, should_stop=self.check)
            for corpus in spec.retain_corpora or [spec.retain_corpus]
        ]
        retain_freq = retain_frequency(rs)  # a feature's highest retain frequency
        self.windows, self.clean = [], None
        if spec.loss_tokens:
            self.progress.begin("loss baseline")
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
            self.progress.begin("baseline")
            on_variant = spec.model_variant != "base"
            with self.announced(sets, 1, loss_configs=1 if on_variant else 0):
                self.finish_config(self.evaluate(sets, None, BASELINE, None, None, None, []))
        selections = {
            t: [r["feature"] for r in select_features(fs.freq, retain_freq, t, max(spec.ns))] for t in spec.thresholds
        }
        modes = job_modes(job.spec)
        tagged = len(modes) > 1  # keys name the mode only when several run side by side

        def key(t, n, v, m):
            return config_key(t, n, v, m if tagged else None)

        job.empty_left = sum(
            1
            for t in spec.thresholds
            for n in spec.ns
            for v in spec.values
            for m in modes
            if not selections[t][:n] and key(t, n, v, m) not in done
        )
        # started before the phase's clock (worker start-up is setup); Ray workers hold no variant
        pool = self.runner.ray_pool() if spec.model_variant == "base" else None
        self.progress.begin("configurations")
        job.phase_started = time.time()
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
                    self.progress.begin("configurations")  # a stage: this selection's values
                    with self.announced(sets, len(ivs), loss_configs=len(ivs), shared=True):
                        accs = self.shared_accuracies(sets, ivs)
                        for k, v, iv, acc in zip(keys, todo, ivs, accs):
                            self.finish_config(self.evaluate(sets, iv, k, t, n, v, chosen, acc))
        if remote:
            self.remote_accuracies(pool, sets, remote)

    def announced(self, sets: dict, n_configs: int, loss_configs: int, shared: bool = False):
        """Announce a stage's steps up front (its accuracy steps, and ``loss_configs`` loss passes)
        and count its steps without the parts' own announcements, so the total does not grow as
        each part starts. ``shared``: the configurations go through ``shared_accuracies``' steps
        (one question with up to ``CONFIG_STEP`` configurations), else ``score_chunked``'s."""
        from unlearn_core.evaluation.sweep import config_steps

        n_q = [len(qs) for qs in sets.values()]
        if shared:
            acc = sum(n_q) * len(config_steps(n_configs))
        else:
            per = score_per_step(self.state)
            acc = n_configs * sum(-(-n // per) for n in n_q if n)
        loss = loss_configs * nll_step_count(self.state, self.windows) if self.spec.loss_tokens else 0
        self.progress.expect(acc + loss)
        return self.state.tracked(Announced(self.progress))

    def evaluate_variant(self, sets: dict, variant: str) -> dict:
        """A model variant's row: accuracy on the same known questions (chosen on the base model)
        and loss added against the base model's clean loss, with the variant's delta applied in
        every hold of the model lock."""
        from unlearn_core.evaluation.mcq import accuracy

        t0 = time.time()
        with self.state.variant(variant):
            accs = {
                name: finite(accuracy(score_chunked(self.state, qs, None, self.check, variant))) if qs else None
                for name, qs in sets.items()
            }
            nll = nll_chunked(self.state, self.windows, None, self.check)[0] if self.spec.loss_tokens else None
        side = {s: accs.get(s) for s in self.spec.side_effect_sets}
        vals = [a for a in side.values() if a is not None]
        return {
            "config": variant,
            "threshold": None,
            "n": None,
            "value": None,
            "mode": variant.split(":")[0],  # "rmu" or "persist"
            "variant": variant,
            "features": [],
            "forget_accuracy": accs.get("forget"),
            "side_effect_accuracy": side,
            "side_effect_mean": sum(vals) / len(vals) if vals else None,
            "loss_added": finite(nll - self.clean) if nll is not None else None,
            "n_questions": {k: len(q) for k, q in sets.items()},
            "seconds": round(time.time() - t0, 3),
            "note": None,
        }

    def gate_tau(self, features: list[int]) -> float:
        """The job's tau: given, or calibrated on gate_corpus for this selection (cached on disk)."""
        from unlearn_core.method.gate import DEFAULT_CORPUS, calibrate

        if self.spec.gate is not None:
            return self.spec.gate
        with self.state.model("gate calibration") as engine:
            return calibrate(
                engine,
                self.spec.sae,
                tuple(features),
                self.spec.gate_corpus or DEFAULT_CORPUS,
                self.spec.gate_percentile,
            ).tau

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
            loss = (
                LossWindows(
                    self.spec.loss_corpus, self.spec.loss_tokens, LOSS_CTX, LossWindows.digest_of(self.windows)
                ),
                len(self.windows),
            )
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
            run_steps(
                self.state,
                (
                    (lambda engine, q=q, idx=idx, totals=totals: add_step(engine, q, configs, idx, totals))
                    for q in qs
                    for idx in groups
                ),
                "configurations",
                self.check,
            )
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

    def evaluate(
        self,
        sets: dict,
        ivs,
        key: str,
        t,
        n,
        v,
        features: list[int],
        accs: dict | None = None,
        nll: float | None = None,
    ) -> dict:
        from unlearn_core.evaluation.mcq import accuracy

        t0 = time.time()
        note = None if ivs or key == BASELINE else "no feature passes the retain threshold: nothing to evaluate"
        if accs is None:  # else computed together with the other clamp values of this selection
            accs = {}
            if ivs or key == BASELINE:
                for name, qs in sets.items():
                    accs[name] = (
                        finite(accuracy(score_chunked(self.state, qs, ivs, self.check, "baseline"))) if qs else None
                    )
        side = {s: accs.get(s) for s in self.spec.side_effect_sets}
        vals = [a for a in side.values() if a is not None]
        loss = None
        on_variant = self.spec.model_variant != "base"
        if self.spec.loss_tokens and key == BASELINE:  # on a variant: the variant's own loss added
            loss = (
                finite(nll_chunked(self.state, self.windows, None, self.check)[0] - self.clean) if on_variant else 0.0
            )
        elif self.spec.loss_tokens and ivs:
            if nll is None:  # else computed on a Ray worker
                nll, _ = nll_chunked(self.state, self.windows, ivs, self.check)
            loss = finite(nll - self.clean)
        gate = {}
        if ivs and ivs[0].gate is not None:  # the share of each set's questions the gate opens on
            gate = {"gate": ivs[0].gate, "gate_open": self.open_rates(sets, ivs[0])}
        return {
            "config": key,
            "threshold": t,
            "n": n,
            "value": v,
            "mode": ivs[0].mode if ivs else None,
            **gate,
            "features": list(features),
            "forget_accuracy": accs.get("forget"),
            "side_effect_accuracy": side,
            "side_effect_mean": sum(vals) / len(vals) if vals else None,
            "loss_added": loss,
            "n_questions": {k: len(q) for k, q in sets.items()},
            "seconds": round(time.time() - t0, 3),
            "note": note,
            "variant": self.spec.model_variant if on_variant else None,
        }
