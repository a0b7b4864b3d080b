"""The matmul-only lower bound of one slider update on this machine: what no fp32 implementation
of the exact computation can beat, to read the slider benchmark against.

Counts the multiply-adds of one letter-scoring update (the blocks after the hook over every
position of a T-token question, the last block's queries and MLP at the last position only,
one full-vocabulary unembedding) and times matrices of those shapes in fp32 (and bf16, for
comparison: not exact, so not used by the fast path). The attention-score products and every
elementwise operation are left out, so the real floor is higher still.

    python bench/floor.py [--tokens 199] [--hook-layer 5]
"""

from __future__ import annotations

import torch
from common import load, machine, parser, pct, timeit


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tokens", type=int, default=199)
    p.add_argument("--hook-layer", type=int, default=5)
    args = p.parse_args()
    engine, _ = load(args)
    m = engine.model
    cfg, T = m.cfg, args.tokens
    b = m.blocks[-1]
    H, d, dh = b.attn.W_Q.shape
    Kh = b.attn._W_K.shape[0] if hasattr(b.attn, "_W_K") else H
    mats = {  # [in, out] of every weight matmul in one block
        "W_Q": (d, H * dh),
        "W_K": (d, Kh * dh),
        "W_V": (d, Kh * dh),
        "W_O": (H * dh, d),
        "W_gate": (d, cfg.d_mlp),
        "W_in": (d, cfg.d_mlp),
        "W_out": (cfg.d_mlp, d),
    }
    n_down = cfg.n_layers - (args.hook_layer + 1)
    per_tok = {k: 2 * i * o for k, (i, o) in mats.items()}
    block = sum(per_tok.values())
    kv = per_tok["W_K"] + per_tok["W_V"]
    flops = (n_down - 1) * T * block + T * kv + (block - kv) + 2 * d * cfg.d_vocab
    print(f"machine: {machine()}")
    print(f"{args.model}: {n_down} blocks after layer {args.hook_layer}, {T}-token question, vocab {cfg.d_vocab}\n")
    print("| matmul | shape | fp32 GFLOP/s | bf16 GFLOP/s |\n| --- | --- | --- | --- |")
    t32 = t16 = 0.0
    with torch.inference_mode():
        for name, (i, o) in mats.items():
            w, wb = torch.randn(i, o), torch.randn(i, o).bfloat16()
            times = {}
            for rows in (T, 1):
                x = torch.randn(rows, i)
                xb = x.bfloat16()
                times[rows] = (pct(timeit(lambda: x @ w, 30), 0.5), pct(timeit(lambda: xb @ wb, 30), 0.5))
            # blocks before the last: every position; the last block: keys/values everywhere, the rest at 1
            last = T if name in ("W_K", "W_V") else 1
            t32 += (n_down - 1) * times[T][0] + times[last][0]
            t16 += (n_down - 1) * times[T][1] + times[last][1]
            f = 2 * T * i * o
            print(f"| {name} | [{T}, {i}] x [{i}, {o}] | {f / times[T][0] / 1e9:.0f} | {f / times[T][1] / 1e9:.0f} |")
        x = torch.randn(1, d)
        W_U = m.W_U.detach()
        su = pct(timeit(lambda: x @ W_U, 10), 0.5)
        W_Ub = W_U.bfloat16()
        sub = pct(timeit(lambda: x.bfloat16() @ W_Ub, 10), 0.5)
    print(
        f"| unembed | [1, {d}] x [{d}, {cfg.d_vocab}] | {2 * d * cfg.d_vocab / su / 1e9:.0f} | "
        f"{2 * d * cfg.d_vocab / sub / 1e9:.0f} |\n"
    )
    print(f"one letter update: {flops / 1e9:.1f} GFLOP")
    print(
        f"matmul-only floor, fp32: {(t32 + su) * 1000:.0f} ms per update, {21 * (t32 + su):.2f} s per "
        f"21-point curve (21 single updates)"
    )
    print(f"matmul-only floor, bf16 (not exact): {(t16 + sub) * 1000:.0f} ms per update")


if __name__ == "__main__":
    main()
