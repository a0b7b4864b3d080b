"""Throughput of an 8-configuration sweep over 50 questions: shared work vs per-configuration
recomputation, in the same run.

Per-configuration recomputation = for every configuration, score every question with the
intervention hooks (our straightforward path). Shared = ``sweep.evaluate_configs``: one
upstream pass per question (and ordering), the configurations batched downstream.
The default scoring of the embedded base model is cloze (order-invariant, so no orderings);
``--scoring letter`` scores all 24 orderings of each question, as the paper does.

    python bench/sweep.py [--questions 50] [--scoring cloze|letter]
"""

from __future__ import annotations

import time

from common import load, machine, parser

from unlearn_core.data import loaders as D
from unlearn_core.evaluation.mcq import all_orderings, score_questions
from unlearn_core.evaluation.sweep import evaluate_configs
from unlearn_core.features.stats import feature_stats, select_features
from unlearn_core.method import fastpath
from unlearn_core.method.interventions import Intervention


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--scoring", default="cloze", choices=["cloze", "letter"])
    args = p.parse_args()
    engine, _ = load(args)
    key = args.sae
    fs = feature_stats(engine, key, "wmdp-bio-text@train", n_tokens=20_000)
    rs = feature_stats(engine, key, "wikitext@train", n_tokens=20_000)
    rows = select_features(fs.freq, rs.freq, 0.01, 50)
    feats = [r["feature"] for r in rows]
    configs = [[Intervention(key, tuple(feats[:n]), c)] for n in (10, 20) for c in (5.0, 20.0, 50.0, 100.0)]
    qs = D.load_wmdp_bio(engine.settings.data_dir).questions[: args.questions]
    orderings = args.scoring == "letter"
    items = [v for q in qs for v in all_orderings(q)] if orderings else qs
    print(f"machine: {machine()}")
    print(
        f"SAE {key} at {engine.saes[key].hook_name}; {len(configs)} configurations; {len(qs)} WMDP-bio questions; "
        f"scoring {args.scoring}{' x 24 orderings' if orderings else ''} = {len(items)} items per configuration\n"
    )
    fastpath._LRU.clear()
    t = time.perf_counter()
    shared = evaluate_configs(engine, qs, configs, scoring=args.scoring, style="plain", orderings=orderings)
    t_shared = time.perf_counter() - t
    t = time.perf_counter()
    per = []
    for cfg in configs:
        s = score_questions(engine, items, cfg, args.scoring, "plain")
        per.append(sum(x.correct for x in s))
    t_per = time.perf_counter() - t
    assert [r.correct for r in shared] == per, "shared and per-configuration results differ"
    n = len(items) * len(configs)
    print("| path | time | configuration-questions / s |\n| --- | --- | --- |")
    print(f"| per-configuration recomputation | {t_per:.1f} s | {n / t_per:.2f} |")
    print(f"| shared upstream, batched downstream | {t_shared:.1f} s | {n / t_shared:.2f} |")
    print(f"\nspeed-up: {t_per / t_shared:.1f}x (identical correct counts: {per})")


if __name__ == "__main__":
    main()
