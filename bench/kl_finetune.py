"""Prototype run of the KL decoder fine-tune on the embedded SAE: Δloss on held-out WebText/Pile
and sae-dev before and after, KL per step. Saves the folded candidate to --out.

    python bench/kl_finetune.py --tokens 60000 --minutes 12 --eval-tokens 3000 --out cache/sae_candidates/kl
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from common import load, machine, parser


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tokens", type=int, default=60_000)
    p.add_argument("--minutes", type=float, default=12)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eval-tokens", type=int, default=3000)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from safetensors.torch import save_file

    from unlearn_core import data as D
    from unlearn_core.finetune_sae import folded_state, kl_finetune
    from unlearn_core.sae_eval import corpus_report
    from unlearn_core.train_sae import training_texts

    engine, _ = load(args)
    dd = engine.settings.data_dir
    train_docs, dev_docs, _ = training_texts(dd)
    corpora = {"webtext": D.load_corpus("webtext", dd), "pile": D.load_corpus("pile", dd), "sae-dev": dev_docs}
    before = corpus_report(engine, args.sae, corpora, args.eval_tokens)
    print("before", {k: round(v["delta_loss"], 4) for k, v in before.items()}, flush=True)
    n = [0]

    def prog(tokens, kl):
        n[0] += 1
        if n[0] % 10 == 0:
            print(f"step {n[0]} kl {kl:.4f}", file=sys.stderr, flush=True)

    rep = kl_finetune(engine, args.sae, train_docs, args.tokens, lr=args.lr, batch_size=args.batch,
                      max_minutes=args.minutes, progress=prog)
    print("finetune", rep, flush=True)
    after = corpus_report(engine, args.sae, corpora, args.eval_tokens)
    print("after", {k: round(v["delta_loss"], 4) for k, v in after.items()}, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).resolve().parent.parent / "unlearn_core" / "assets" / "embedded_sae"
    shutil.copy(src / "cfg.json", out / "cfg.json")
    import torch
    save_file({k: v.to(torch.float16).contiguous() for k, v in folded_state(engine.saes[args.sae].sae).items()},
              str(out / "sae_weights.safetensors"))
    (out / "finetune.json").write_text(json.dumps({"machine": machine(), "args": vars(args), "finetune": rep,
                                                   "before": before, "after": after}, indent=2))


if __name__ == "__main__":
    main()
