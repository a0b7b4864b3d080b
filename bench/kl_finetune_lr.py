"""The learning-rate probe behind `finetune-sae`'s defaults: KL(clean || spliced) on the sae-dev
documents (2,000 tokens, every counted position) before and after 12-14 steps of each setting,
from the shipped SAE each time. Chosen on sae-dev, not on the held-out corpora the card reports.

    python bench/kl_finetune_lr.py          # about 20 minutes on a 2-core AMD EPYC

Settings: the whole decoder (W_dec, b_dec) at lr 1e-4 / 5e-4 / 2e-3 without warm-up (12 steps);
a per-feature scale and b_dec only at lr 1e-3 / 1e-2 (14 steps); the whole decoder plus a
per-feature scale at lr 3e-5 with a 5-step warm-up (14 steps). 8 windows of 128 tokens per step,
KL on a random quarter of the positions.
"""

from __future__ import annotations

import time

import torch
from common import load, machine, parser


def main() -> None:
    args = parser(__doc__).parse_args()
    from unlearn_core.evaluation.metrics import corpus_windows
    from unlearn_core.features.stats import counted_mask
    from unlearn_core.model.forward import pad_right
    from unlearn_core.training.finetune_sae import KLFinetuneConfig, _sample_positions, kl_finetune, tail_logits
    from unlearn_core.training.train_sae import training_texts

    eng, _ = load(args)
    m, sae = eng.model, eng.saes[args.sae].sae
    layer = 6
    tr, dev, _ = training_texts(eng.settings.data_dir)
    w = corpus_windows(m, dev, 2000, 128)
    batches = [pad_right(w[i : i + 8], 0) for i in range(0, len(w), 8)]
    init = {k: v.clone() for k, v in sae.state_dict().items()}
    W0, b0 = sae.W_dec.detach().clone(), sae.b_dec.detach().clone()
    print(f"machine: {machine()}")

    def dec(codes, ls, W, b):
        return (codes * ls.exp()) @ W + b

    @torch.no_grad()
    def dev_kl(ls, W, b) -> float:
        tot, n = 0.0, 0
        for toks, lens in batches:
            mask = counted_mask(eng, toks, lens)
            r = m(toks, stop_at_layer=layer)
            c = torch.log_softmax(tail_logits(m, r, layer, mask), -1)
            s = torch.where((~mask).unsqueeze(-1), r, dec(sae.encode(r), ls, W, b))
            lp = torch.log_softmax(tail_logits(m, s, layer, mask), -1)
            tot += float((c.exp() * (c - lp)).sum(-1).sum())
            n += int(mask.sum())
        return tot / n

    zero = torch.zeros(W0.shape[0])
    print(f"dev KL before: {dev_kl(zero, W0, b0):.4f}", flush=True)
    for lr in (1e-4, 5e-4, 2e-3):
        sae.load_state_dict(init)
        rep = kl_finetune(eng, args.sae, tr, KLFinetuneConfig(n_tokens=8 * 127 * 12, lr=lr, warmup_steps=1))
        print(
            f"decoder, lr {lr:g}, no warm-up: dev KL after {dev_kl(zero, sae.W_dec, sae.b_dec):.4f} "
            f"({rep['seconds']:.0f} s)",
            flush=True,
        )
    sae.load_state_dict(init)
    trw = corpus_windows(m, tr, 8 * 127 * 14, 128)

    def run(name: str, train_W: bool, lr: float, warm: int, steps: int = 14) -> None:
        ls = torch.zeros(W0.shape[0], requires_grad=True)
        W = W0.clone().requires_grad_(train_W)
        b = b0.clone().requires_grad_(True)
        bases = [lr, lr * 10] + ([lr] if train_W else [])
        groups = [{"params": [b]}, {"params": [ls]}] + ([{"params": [W]}] if train_W else [])
        opt = torch.optim.Adam([{**g, "lr": x} for g, x in zip(groups, bases)])
        t = time.time()
        for s in range(steps):
            for g, base in zip(opt.param_groups, bases):
                g["lr"] = base * min(1.0, (s + 1) / warm)
            toks, lens = pad_right(trw[s * 8 : (s + 1) * 8], 0)
            mask = counted_mask(eng, toks, lens)
            pos = _sample_positions(mask, 0.25, torch.Generator().manual_seed(s))
            with torch.no_grad():
                r = m(toks, stop_at_layer=layer)
                c = torch.log_softmax(tail_logits(m, r, layer, pos), -1)
                codes = sae.encode(r)
            sp = torch.where((~mask).unsqueeze(-1), r, dec(codes, ls, W, b))
            lp = torch.log_softmax(tail_logits(m, sp, layer, pos), -1)
            kl = (c.exp() * (c - lp)).sum(-1).mean()
            opt.zero_grad()
            kl.backward()
            opt.step()
        print(
            f"{name}: dev KL after {dev_kl(ls.detach(), W.detach(), b.detach()):.4f} ({time.time() - t:.0f} s)",
            flush=True,
        )

    run("scale + b_dec, lr 1e-3 (scale 1e-2)", False, 1e-3, 1)
    run("scale + b_dec, lr 1e-2 (scale 1e-1)", False, 1e-2, 1)
    run("decoder + scale, lr 3e-5 (scale 3e-4), 5-step warm-up", True, 3e-5, 5)


if __name__ == "__main__":
    main()
