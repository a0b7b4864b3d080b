"""Regenerate the feature statistics shipped with the embedded SAE (unlearn_core/core/assets/embedded_sae/stats).

    .venv/bin/python scripts/ship_stats.py            # every request below, on the CPU in float32
    .venv/bin/python scripts/ship_stats.py --list     # what would be computed, and which files ship now
    .venv/bin/python scripts/ship_stats.py --only sherlock@train
    .venv/bin/python scripts/ship_stats.py --missing  # only what does not ship yet (an interrupted run)

Why: a newcomer's first run, `target eval` and the integration tests would otherwise compute these
from nothing (minutes per corpus on a CPU). Each file is named by the same content key as the
disk cache entry (model identity, SAE fingerprint, corpus documents' digest, tokens, window), so it
is read only when all of them match. Rerun after changing the embedded model or SAE, a built-in
target's corpora or token budget, or the shipped corpora's text; files no request names are removed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CTX = 128
# the app's first pages besides the targets: Feature search's background (webtext, 20,000 tokens)
# and the free selection's defaults (server SelectRequest: wmdp-bio-text@train vs wikitext@train)
APP_REQUESTS = [("webtext", 20_000), ("wmdp-bio-text@train", 20_000), ("wikitext@train", 20_000)]


def target_requests(engine) -> list[tuple[str, int]]:
    """(corpus, tokens) of every built-in target's selection: forget (or its fallback), retain
    corpora, and the search background; the guided demo is the default target's selection."""
    from unlearn_core.evaluation.targets import forget_corpus_for, load_targets

    out: list[tuple[str, int]] = []
    for t in load_targets().values():
        sel = t.selection
        corpora = [forget_corpus_for(t, engine.settings.data_dir)[0], *t.retain_corpora]
        if sel.method == "search":
            corpora.append(sel.background)
        out += [(c, sel.tokens) for c in corpora]
    return out


def requests(engine) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in target_requests(engine) + APP_REQUESTS:
        if r not in seen:
            seen.append(r)
    return seen


def ship_one(engine, sae: str, corpus: str, n_tokens: int, shipped_dir: Path) -> Path:
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.features import stats as F

    docs, windows = F.stats_windows(engine, corpus, n_tokens, CTX)
    entry = F.stats_path(engine, sae, corpus, docs, n_tokens, CTX)
    acc = F.StatsAccumulator(engine, sae, windows)
    for i in range(acc.n_batches):
        acc.add(i)
    return SH.write_shipped(entry, acc.result(), shipped_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the requests and the shipped files, compute nothing")
    p.add_argument("--only", action="append", default=[], help="compute only this corpus (repeatable)")
    p.add_argument("--missing", action="store_true", help="compute only the entries not shipped yet")
    args = p.parse_args()

    import torch

    from unlearn_core.core.settings import load_settings
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.features import stats as F
    from unlearn_core.model.engine import load_engine

    torch.manual_seed(0)
    engine = load_engine(load_settings({"device": "cpu", "dtype": "float32"}), progress=False)
    sae = engine.default_sae
    out = SH.SHIPPED_DIR
    wanted = {}
    for corpus, n in requests(engine):
        docs = F.corpus_docs(engine, corpus)
        wanted[F.stats_path(engine, sae, corpus, docs, n, CTX).name] = (corpus, n)
    for name, (corpus, n) in wanted.items():
        print(f"{corpus:24s} {n:>7d} tokens  {'shipped' if (out / name).exists() else 'missing'}  {name}")
    if args.list:
        return
    for name, (corpus, n) in sorted(wanted.items(), key=lambda kv: kv[1][1]):  # small budgets first
        if (args.only and corpus not in args.only) or (args.missing and (out / name).exists()):
            continue
        t = time.perf_counter()
        path = ship_one(engine, sae, corpus, n, out)
        print(f"{corpus}: {time.perf_counter() - t:.0f} s, {path.stat().st_size / 1e6:.2f} MB", flush=True)
    if not args.only and not args.missing:
        for stale in out.glob("*.safetensors"):
            if stale.name not in wanted:
                print(f"removing stale {stale.name}")
                stale.unlink()
    total = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print(f"shipped statistics: {total / 1e6:.2f} MB in {len(list(out.glob('*.safetensors')))} files")


if __name__ == "__main__":
    main()
