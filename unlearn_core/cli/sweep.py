"""``sweep``: a batch evaluation (the server's job code, run here), locally or on Ray workers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from unlearn_core.cli.common import add_command, emit, engine_of, floats, progress_bar, settings_of
from unlearn_core.method.modes import MODES


def _grid(args) -> tuple[list[float], list[int], list[float]]:
    """--thresholds, --n and --clamps; those not given, from the target's default (``grid.default_grid``,
    as the Batch page prefills them). Without --target all three are needed."""
    given = (args.thresholds, args.n, args.clamps)
    if None in given and not args.target:
        raise SystemExit("sweep: --thresholds, --n and --clamps are needed without --target")
    if None in given:
        from unlearn_core.evaluation.grid import default_grid
        from unlearn_core.evaluation.targets import load_targets

        t = load_targets(settings_of(args).targets_file).get(args.target)
        if t is None:
            raise SystemExit(f"sweep: unknown target {args.target!r} (see `target list`)")
        defaults = default_grid(t.selection.n, t.intervention.c, t.selection.threshold, t.selection.method)
    else:
        defaults = ([], [], [])
    thresholds = floats(args.thresholds) if args.thresholds else defaults[0]
    ns = [int(x) for x in floats(args.n)] if args.n else defaults[1]
    return thresholds, ns, floats(args.clamps) if args.clamps else defaults[2]


def _spec_fields(args) -> dict:
    """The JobSpec's fields from the command line (those not given keep the spec's defaults)."""
    thresholds, ns, values = _grid(args)
    fields = {
        "thresholds": thresholds,
        "ns": ns,
        "values": values,
        "question_limit": args.limit,
        "known": not args.all_questions,
        "delay_per_config": args.delay_per_config,
    }
    for k, v in (
        ("target", args.target),
        ("forget_set", args.forget_set),
        ("side_effect_sets", args.side_set),
        ("selection_tokens", args.selection_tokens),
        ("loss_tokens", args.loss_tokens),
        ("mode", args.mode),
        ("modes", args.modes.replace(",", " ").split() if args.modes else None),
        ("gate", args.gate),
        ("gate_percentile", args.gate_percentile),
        ("gate_corpus", args.gate_corpus),
        ("variants", args.variants.replace(",", " ").split() if args.variants else None),
        ("model_variant", args.model_variant),
    ):
        if v is not None:
            fields[k] = v
    return fields


def _resume_or_create(store, spec: dict, ns: str):
    """An unfinished run of the same spec on the same model (resumed), else a new one."""
    from unlearn_core.server.jobs import FINAL

    same = json.dumps(spec, sort_keys=True)
    job = next(
        (
            j
            for j in reversed(store.load_all())
            if j.status not in FINAL and j.namespace == ns and json.dumps(j.spec, sort_keys=True) == same
        ),
        None,
    )
    if job is not None:
        print(f"resuming run {job.id}: {job.done} of {job.total} configurations already done", file=sys.stderr)
        return job
    return store.create(spec, ns)


def _run_with_bar(runner, job, backend: str) -> None:
    """Run the job; a watcher thread moves the bar (total: the job's configurations) as rows finish."""
    import threading

    bar = progress_bar(job.total, f"sweep ({backend})")
    bar.update(job.done)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            bar.set_postfix_str(job.phase or "")
            bar.update(job.done - bar.n)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        runner.run_job(job)
    finally:
        stop.set()
        watcher.join()
        bar.update(job.done - bar.n)
        bar.close()
        runner.close_pool()


def _table(rows: list[dict], job_id: str, out: Path) -> str:
    cols = ["config", "forget_accuracy", "forget_n", "side_effect_mean", "side_n", "loss_added"]

    def cell(v) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["  ".join(f"{c:<18}" for c in cols)]
    lines += ["  ".join(f"{cell(r.get(c)):<18}" for c in cols) for r in rows]
    lines.append(f"{len(rows)} configurations; run {job_id}; results in {out / 'results.csv'}")
    return "\n".join(lines)


def cmd_sweep(args) -> None:
    """A batch evaluation (the server's job code, run here), locally or on Ray workers; resumable:
    the same command on the same --out resumes an unfinished run of the same spec."""
    from unlearn_core.server.jobs import JobRunner, JobStore
    from unlearn_core.server.schemas import JobSpec
    from unlearn_core.server.state import ServerState

    s = settings_of(args)
    engine = engine_of(args)
    # the tiny engine builds its own settings: carry over what the command line gave
    engine.settings.data_dir = s.data_dir or engine.settings.data_dir
    engine.settings.targets_file = s.targets_file or engine.settings.targets_file
    engine.settings.job_backend = args.backend or s.job_backend
    engine.settings.ray_workers = args.workers or s.ray_workers
    engine.settings.ray_address = args.address or s.ray_address
    if args.delay_per_config and not args.tiny:
        raise ValueError("--delay-per-config is a test option, only with --tiny")
    fields = _spec_fields(args)
    state = ServerState(lambda: engine)
    runner = JobRunner(state, allow_delay=args.tiny)
    spec = runner.prepare(JobSpec(**fields))
    out = Path(args.out)
    runner.store = store = JobStore(out / "jobs")
    job = _resume_or_create(store, spec, engine.cache_namespace())
    runner.jobs[job.id] = job
    t0 = time.time()
    _run_with_bar(runner, job, engine.settings.job_backend)
    if job.status != "done":
        raise RuntimeError(f"the sweep {job.status}: {job.error or ''} (rows so far in {store.dir(job.id)})")
    from unlearn_core.ui.results import result_rows

    rows = result_rows(job.results)
    obj = {
        "job": job.id,
        "backend": engine.settings.job_backend,
        "seconds": round(time.time() - t0, 3),
        "setup_s": job.setup_s,
        "configurations_s": round(time.time() - job.phase_started, 3) if job.phase_started else None,
        "results": rows,
        "tasks": job.tasks,
    }
    _write_sweep(out, obj)
    emit(args, obj, _table(rows, job.id, out))


def _write_sweep(out: Path, obj: dict) -> None:
    """results.json (everything) and results.csv (the batch page's table) under ``out``."""
    import pandas as pd

    from unlearn_core.core.cache import atomic_write_json

    atomic_write_json(out / "results.json", obj)
    pd.DataFrame(obj["results"]).to_csv(out / "results.csv", index=False)


def add_parsers(sub) -> None:
    s = add_command(
        sub, "sweep", cmd_sweep, help="batch evaluation (threshold x N x clamp), locally or on a Ray cluster"
    )
    s.add_argument(
        "--backend",
        choices=["local", "ray"],
        help="where configurations run (default: setting job_backend, else local)",
    )
    s.add_argument("--workers", type=int, help="Ray workers when starting a local Ray instance (default 2)")
    s.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a local instance)")
    s.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
    s.add_argument("--target", help="an unlearning target: its corpora and question sets (see `target list`)")
    s.add_argument("--thresholds", help="retain thresholds, e.g. 0.01,0.05 (default with --target: its own)")
    s.add_argument("--n", help="numbers of features, e.g. 10,20 (default with --target: its N and N/2)")
    s.add_argument("--clamps", help="clamp values, e.g. 20,50 (default with --target: its c, c/2, c/4)")
    s.add_argument("--mode", choices=MODES)
    s.add_argument("--modes", help="several modes side by side over the same configurations, e.g. clamp,gated")
    s.add_argument("--gate", type=float, help="gated modes: tau")
    s.add_argument(
        "--gate-percentile",
        type=float,
        help="gated modes: tau = this percentile of rho on --gate-corpus, per selection",
    )
    s.add_argument("--gate-corpus", help="the corpus of --gate-percentile (default wikitext@train)")
    s.add_argument("--forget-set", help="forget question set (default: the target's, else wmdp-bio)")
    s.add_argument("--side-set", action="append", help="a side-effect (retain) question set; repeatable")
    s.add_argument("--limit", type=int, default=0, help="first Q questions of each set (0 = all)")
    s.add_argument("--all-questions", action="store_true", help="no known filter")
    s.add_argument("--selection-tokens", type=int, help="tokens of feature statistics per corpus")
    s.add_argument("--loss-tokens", type=int, help="tokens of loss added (0 skips it)")
    s.add_argument(
        "--variants",
        help="fine-tuned models (RMU, persistent) compared as rows of their own (no clamp), e.g. rmu:bio,persist:b2",
    )
    s.add_argument(
        "--model-variant",
        dest="model_variant",
        metavar="rmu:NAME|persist:NAME",
        help="run the clean row and every clamp on top of this fine-tuned model (the known questions, "
        "feature selection and clean loss stay the model as loaded's)",
    )
    s.add_argument("--out", required=True, help="folder: results.csv, results.json and the resumable run")
    s.add_argument("--delay-per-config", type=float, default=0.0, help=argparse.SUPPRESS)  # tests, --tiny only
