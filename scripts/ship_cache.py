"""Regenerate the cache entries shipped with the embedded SAE (unlearn_core/core/assets/embedded_sae/cache).

    .venv/bin/python scripts/ship_cache.py

What ships: for every built-in target whose questions the embedded model is scored on here
(bio-basics, sherlock; wmdp-bio's questions are not distributed), the known filter of its forget
and retain question sets (whole, train and held-out halves; the reworded bio quiz too), under
the key the CLI uses and under the server's per-block keys (``steps.LOCK_CHUNK`` questions a
block), each question-based selection's feature scores (``target_scores``), and a gated
default's gate calibration (rho on each retain corpus, ``method.gate.calibrate``). Why: a fresh
clone's first `target eval`, guided demo and integration tests would otherwise spend minutes
re-deciding which of a few hundred questions the model knows. Entries are named by their content
key (model and SAE identity, the questions' digest, scoring, strictness), so they are read only
where all of those match. Rerun after changing the embedded model, the SAE, a built-in target's
question sets or selection, or the quizzes. The kinds given (``--kinds``, default all) are
rewritten whole; the others stay as shipped:

    .venv/bin/python scripts/ship_cache.py --kinds gate --work cache   # a new gated default's tau only
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHIPPED_TARGETS = ("bio-basics", "sherlock")
EXTRA_SETS = {"bio-basics": ("quiz:bio-paraphrase",)}  # reworded questions: the paraphrase checks read them


def main() -> None:
    import argparse

    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--work", help="the cache folder to compute in (kept; a rerun reuses it); default a new temporary one"
    )
    p.add_argument("--kinds", help="comma-separated kinds to rewrite (default: all of cache.SHIPPED_KINDS)")
    args = p.parse_args()

    from unlearn_core.core import cache as C
    from unlearn_core.core.settings import load_settings
    from unlearn_core.data import loaders as D
    from unlearn_core.data.specs import with_part
    from unlearn_core.evaluation.mcq import known_path, known_questions
    from unlearn_core.evaluation.target_scores import target_feature_scores
    from unlearn_core.evaluation.targets import QUESTION_METHODS, default_intervention, load_targets
    from unlearn_core.features.stats import corpus_docs
    from unlearn_core.method.gate import CALIBRATION_CTX, CALIBRATION_TOKENS, calibration_path
    from unlearn_core.method.modes import GATED_MODES
    from unlearn_core.model.engine import load_engine
    from unlearn_core.server.steps import LOCK_CHUNK

    torch.manual_seed(0)
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ship-cache-"))
    engine = load_engine(load_settings({"device": "cpu", "dtype": "float32", "cache_dir": str(tmp)}), progress=False)
    t0 = time.perf_counter()
    kinds = args.kinds.split(",") if args.kinds else list(C.SHIPPED_KINDS)
    unknown = set(kinds) - set(C.SHIPPED_KINDS)
    if unknown:
        p.error(f"unknown kinds {sorted(unknown)}; shipped kinds: {C.SHIPPED_KINDS}")
    gate_files = []
    for name in SHIPPED_TARGETS:
        t = load_targets()[name]
        if "known" in kinds:
            for spec in dict.fromkeys([t.forget_questions, *t.retain_questions, *EXTRA_SETS.get(name, ())]):
                for part in ("all", "train", "heldout"):
                    qs = D.load_question_set(with_part(spec, part), engine.settings.data_dir).questions
                    ids = {q.id for q in known_questions(engine, qs, scoring=t.scoring, strict=t.strict_known)}
                    for s in range(0, len(qs), LOCK_CHUNK):  # the server's entries: the same decisions, per block
                        block = qs[s : s + LOCK_CHUNK]
                        C.atomic_write_json(
                            known_path(engine, block, t.strict_known), [q.id for q in block if q.id in ids]
                        )
                    print(f"{name}: {with_part(spec, part)}: {len(ids)} of {len(qs)} known", flush=True)
        if "feature_scores" in kinds and t.selection.method in QUESTION_METHODS:
            target_feature_scores(engine, t, engine.default_sae, t.selection.method)
            print(f"{name}: {t.selection.method} scores", flush=True)
        if "gate" in kinds and t.intervention.mode in GATED_MODES:
            iv = default_intervention(engine, t)  # calibrates (or reads) each retain corpus's rho
            for corpus in t.retain_corpora:
                docs = corpus_docs(engine, corpus)
                gate_files.append(
                    calibration_path(engine, iv.sae_key, iv.features, corpus, docs, CALIBRATION_TOKENS, CALIBRATION_CTX)
                )
            print(f"{name}: gate tau {iv.gate:.4f} ({t.intervention.mode}, {len(iv.features)} features)", flush=True)
    out = C.shipped_dir()
    for kind in kinds:
        shutil.rmtree(out / kind, ignore_errors=True)
        if kind == "gate":  # only the defaults' entries (a reused --work folder holds others)
            (out / kind).mkdir(parents=True, exist_ok=True)
            for f in gate_files:
                shutil.copy2(f, out / kind / f.name)
        elif (tmp / kind).is_dir():
            shutil.copytree(tmp / kind, out / kind)
    files = [f for f in out.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"shipped cache entries: {len(files)} files, {size / 1e3:.0f} kB, in {time.perf_counter() - t0:.0f} s")
    if not args.work:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
