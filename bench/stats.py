"""Tokens/s of feature statistics vs a bare forward to the hook, on the same windows.

python bench/stats.py [--tokens 20000]
"""

from __future__ import annotations

import tempfile
import time

import torch
from common import load, machine, parser

from unlearn_core.features.stats import corpus_docs, feature_stats, layer_of_hook, windows_for
from unlearn_core.model.forward import pad_right


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tokens", type=int, default=20_000)
    args = p.parse_args()
    engine, _ = load(args)
    key = args.sae
    engine.settings.cache_dir = tempfile.mkdtemp()  # no cache hits: measure the computation
    windows = windows_for(engine, corpus_docs(engine, "webtext"), args.tokens, 128)
    stop = layer_of_hook(engine.saes[key].hook_name)
    model = engine.model
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(windows), 16):
            toks, _ = pad_right(windows[s : s + 16], 0)
            model(toks, stop_at_layer=stop)
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    st = feature_stats(engine, key, "webtext", n_tokens=args.tokens, ctx=128)
    t_stats = time.perf_counter() - t
    n = sum(len(w) for w in windows)
    print(f"machine: {machine()}")
    print(
        f"SAE {key} at {engine.saes[key].hook_name} (d_sae {engine.saes[key].d_sae}); "
        f"{len(windows)} windows of <=128 tokens, {n} tokens\n"
    )
    print("| path | time | tokens/s |\n| --- | --- | --- |")
    print(f"| bare forward to the hook (stop_at_layer={stop}) | {t_bare:.1f} s | {n / t_bare:.0f} |")
    print(f"| feature statistics (freq, mean, max, histogram, per-window max) | {t_stats:.1f} s | {n / t_stats:.0f} |")
    print(
        f"\nstatistics run at {t_bare / t_stats:.0%} of the bare forward's speed ({st.n_tokens} non-BOS tokens counted)"
    )


if __name__ == "__main__":
    main()
