"""The dev grid that chose the persistent method's defaults (core/assets/persist.toml): each
setting is trained on a target's forget and retain text and scored on the target's *train*-half
known questions (dev), never the held-out half the comparison reports.

    python bench/persist_dev_grid.py bio-basics '[{"forget_mode": "clamp", "steps": 100}]'

Prints one JSON line per setting: dev forget accuracy, dev retain per set and mean, loss added on
5,000 WebText tokens, training seconds. Runs are cached under cache/persist/dev-<setting>/.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import torch

from unlearn_core.core import cache as C
from unlearn_core.core.settings import Settings
from unlearn_core.evaluation.experiments.gate import known_sets
from unlearn_core.evaluation.experiments.rmu import variant_row
from unlearn_core.evaluation.targets import engine_target
from unlearn_core.model.engine import load_engine
from unlearn_core.training import persist as P


def main(target_name: str, grid: list[dict]) -> None:
    torch.set_num_threads(2)
    e = load_engine(Settings())
    t = engine_target(e, target_name)
    dev = replace(t, eval_part="train")
    sets = known_sets(e, dev)
    print(json.dumps({"n_known": {k: len(v) for k, v in sets.items()}}), flush=True)
    for over in grid:
        cfg = P.default_config(e.model_name, **over)
        readable = "-".join(f"{k[:6]}{v}" for k, v in sorted(over.items())).replace(",", "_").replace(" ", "")
        name = f"dev-{C.key_of(over)[:8]}-{readable}"[:64]
        t0 = time.time()
        card = P.train(e, name, t, cfg)
        row = variant_row(e, dev, P.PREFIX + name, sets, 5000, name)
        out = {
            "over": over,
            "train_s": round(time.time() - t0),
            "features": card["features"],
            "forget": row["forget"],
            "retain": row["retain"],
            "retain_mean": row["retain_mean"],
            "loss": row["loss_added"],
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
