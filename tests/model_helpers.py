"""Helpers for tests: counting the model's forward passes, and the clamp computed independently
of the package (method.md's formula written out from the raw SAE weights)."""

from __future__ import annotations

import torch

from unlearn_core.method.interventions import intervened
from unlearn_core.model.tiny import ALWAYS_FIRES, NEVER_FIRES, TINY_HOOK


class ForwardCounter:
    """Counts forward passes of the model (each scoring batch is one) inside a ``with`` block."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


NEXT = "blocks.1.hook_resid_pre"  # what the hooked point hands to the next block
TEXT = "The mitochondria is the powerhouse of the cell."


def manual_codes(sae, x):
    """JumpReLU written out from the raw weights (in float64), not through sae.encode."""
    pre = x.double() @ sae.W_enc.double() + sae.b_enc.double()
    return torch.where(pre > sae.threshold.double(), torch.relu(pre), torch.zeros_like(pre))


def manual_clamp(sae, x, feats, c, mode):
    """method.md's formula, literally, in float64: error + decode(clamped codes). ``dsg``: DSG's
    rule, every selected feature to -c wherever any of them fires."""
    x = x.double()
    f = manual_codes(sae, x)
    f[:, 0, :] = 0
    dec = lambda z: z @ sae.W_dec.double() + sae.b_dec.double()  # noqa: E731
    err = x - dec(f)
    g = f.clone()
    anyf = (f[..., list(feats)] > 0).any(-1)
    for i in feats:
        where = anyf if mode == "dsg" else f[..., i] > 0
        g[..., i] = torch.where(where, torch.full_like(f[..., i], -c), f[..., i])
    out = dec(g) if mode == "reconstruct" else err + dec(g)
    out[:, 0] = x[:, 0]
    return out.float()


def run(tiny, ivs, text=TEXT):
    """(clean activation at the hook, what the hooked point passes on under the intervention)."""
    m = tiny.model
    _, clean = m.run_with_cache(text, names_filter=[TINY_HOOK])
    with intervened(m, ivs, tiny.saes):
        _, cache = m.run_with_cache(text, names_filter=[NEXT])
    return clean[TINY_HOOK], cache[NEXT]


def active_features(tiny, k=3):
    x, _ = run(tiny, None)
    f = manual_codes(tiny.saes["tiny"].sae, x)[0, 1:]
    frac = (f > 0).float().mean(0)
    cands = [i for i in torch.argsort(-frac).tolist() if 0 < frac[i] < 1 and i not in (NEVER_FIRES, ALWAYS_FIRES)]
    return cands[:k]


def gemma3_like_engine(cache_dir: str, window: int):
    """A tiny engine shaped like Gemma 3 (grouped-query attention, qk-norm, post-norms, gated MLP,
    local layers with a sliding window of ``window`` tokens) with the engine's copy-free forwards,
    the tiny tokenizer and SAE: for paths that must be exact on local attention (KV caches)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import engine_from_parts
    from unlearn_core.model.fast_blocks import use_fast_attention, use_fast_gated_mlps, use_fast_unembed
    from unlearn_core.model.tiny import tiny_config, tiny_sae, tiny_tokenizer

    tok = tiny_tokenizer()
    base = tiny_config(n_layers=3, seed=5, d_vocab=len(tok), default_prepend_bos=True, tokenizer_prepends_bos=False)
    cfg = HookedTransformerConfig(
        **{**base, "d_mlp": 48, "act_fn": "gelu_pytorch_tanh"},
        gated_mlp=True,
        n_key_value_heads=1,
        use_qk_norm=True,
        use_local_attn=True,
        attn_types=["local", "global", "local"],
        window_size=window,
        rotary_base_local=1_000,
        use_normalization_before_and_after=True,
    )
    model = HookedTransformer(cfg, tokenizer=tok)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    assert use_fast_attention(model) == 3 and use_fast_gated_mlps(model) == 3 and use_fast_unembed(model)
    settings = load_settings({"model": "tiny", "saes": ["tiny"], "cache_dir": cache_dir})
    return engine_from_parts(model, [tiny_sae(32)], settings, model_name="tiny-local")
