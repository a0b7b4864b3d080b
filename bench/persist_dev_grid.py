"""The dev grid that chose the persistent method's defaults (core/assets/persist.toml): each
setting is trained on a target's forget and retain text and scored on the target's *train*-half
known questions (dev), never the held-out half the comparison reports.

    python bench/persist_dev_grid.py bio-basics '[{"forget_mode": "clamp", "steps": 100}]' \
        [--out docs/results/persist_dev_bio-basics]

Prints one JSON line per setting: dev forget accuracy, dev retain per set and mean, loss added on
5,000 WebText tokens, training seconds. Runs are cached under cache/persist/dev-<setting>/.
``--out PREFIX`` also writes ``PREFIX.json`` ({"meta": provenance, "base": the settings each
``over`` changes, "runs": [...]}) and ``PREFIX.md``, the page ``scripts/gen_docs.py`` makes of it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from unlearn_core.cli import pages
from unlearn_core.core import cache as C
from unlearn_core.core.provenance import provenance
from unlearn_core.core.settings import Settings
from unlearn_core.evaluation.experiments.gate import known_sets
from unlearn_core.evaluation.experiments.rmu import variant_row
from unlearn_core.evaluation.targets import engine_target
from unlearn_core.model.engine import load_engine
from unlearn_core.training import persist as P

BASE_KEYS = ("forget_mode", "margin", "retain_norm", "retain_weight", "lm_weight", "clamp")


def main(target_name: str, grid: list[dict], out: str | None = None, argv: list[str] | None = None) -> list[dict]:
    started = time.monotonic()
    torch.set_num_threads(2)
    e = load_engine(Settings())
    t = engine_target(e, target_name)
    dev = replace(t, eval_part="train")
    sets = known_sets(e, dev)
    print(json.dumps({"n_known": {k: len(v) for k, v in sets.items()}}), flush=True)
    runs = []
    for over in grid:
        cfg = P.default_config(e.model_name, **over)
        readable = "-".join(f"{k[:6]}{v}" for k, v in sorted(over.items())).replace(",", "_").replace(" ", "")
        name = f"dev-{C.key_of(over)[:8]}-{readable}"[:64]
        t0 = time.time()
        card = P.train(e, name, t, cfg)
        row = variant_row(e, dev, P.PREFIX + name, sets, 5000, name)
        runs.append(
            {
                "over": over,
                "train_s": round(time.time() - t0),
                "features": card["features"],
                "forget": row["forget"],
                "retain": row["retain"],
                "retain_mean": row["retain_mean"],
                "loss": row["loss_added"],
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    if out:  # the page names the grid's defaults: what each `over` changed (clamp: the target's c)
        base = {k: getattr(P.default_config(e.model_name), k) for k in BASE_KEYS}
        base["clamp"] = base["clamp"] or t.intervention.c
        meta = provenance("persist dev grid", argv, prog="python bench/persist_dev_grid.py", started=started)
        pages.save({"meta": meta, "base": base, "runs": runs}, "persist dev grid", None, out, restamp=False)
    return runs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="the persistent method's dev grid (see the module's docstring)")
    ap.add_argument("target")
    ap.add_argument("grid", help="a JSON list of settings, each a dict of PersistConfig overrides")
    ap.add_argument("--out", help="also write <out>.json and <out>.md")
    a = ap.parse_args()
    main(a.target, json.loads(a.grid), a.out)
