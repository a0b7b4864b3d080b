"""How large are a target's selected features' activations? Chooses a sensible clamp grid for an
SAE: for each built-in target, the 10th/50th/90th percentiles over its selected features of the
mean activation where active and of the maximum, on its forget text.

    python bench/feature_scale.py [--sae FOLDER]
"""

from __future__ import annotations

import torch
from common import load, machine, parser

from unlearn_core.evaluation.targets import DEFAULT_TARGET, load_targets, select_for_target


def main() -> None:
    args = parser(__doc__).parse_args()
    engine, _ = load(args)
    print(f"machine: {machine()}; SAE {args.sae} (d_sae {engine.saes[args.sae].d_sae})")
    print(
        "| target | features | mean where active (p10 / p50 / p90) | max (p10 / p50 / p90) |\n| --- | --- | --- | --- |"
    )
    q = torch.tensor([0.1, 0.5, 0.9])
    targets = load_targets()
    for name in (DEFAULT_TARGET, "sherlock"):
        sel = select_for_target(engine, targets[name], args.sae)
        idx = torch.tensor([r["feature"] for r in sel["features"]])
        fs = sel["forget_stats"]
        cells = [
            " / ".join(f"{float(x):.1f}" for x in torch.quantile(v[idx].float(), q))
            for v in (fs.mean_active, fs.max_act)
        ]
        print(f"| {name} | {len(idx)} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
