"""The copy-free attention/MLP forwards and ``block_last`` against TransformerLens's own forwards."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from unlearn_core.model.fast_blocks import (
    attention_supported,
    block_last,
    use_fast_attention,
    use_fast_gated_mlps,
    use_fast_unembed,
)
from unlearn_core.model.tiny import tiny_config


def _model(kind: str, dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """A Gemma-3-like or a plain 3-layer model with fixed random weights (tests/test_bf16.py uses
    it in bf16 too)."""
    common = tiny_config(n_layers=3, seed=5, n_ctx=64, d_vocab=61, dtype=dtype)  # d_mlp, act_fn: per kind
    if kind == "gemma3-like":  # grouped-query, qk-norm, local/global layers with a short window, post-norms
        cfg = HookedTransformerConfig(
            **{**common, "d_mlp": 48, "act_fn": "gelu_pytorch_tanh"},
            gated_mlp=True,
            n_key_value_heads=1,
            use_qk_norm=True,
            use_local_attn=True,
            attn_types=["local", "global", "local"],
            window_size=5,
            rotary_base=10_000,
            rotary_base_local=1_000,
            use_normalization_before_and_after=True,
            attn_scale=6.0,
        )
    elif kind == "gated":  # plain attention, gated MLP with exact gelu
        cfg = HookedTransformerConfig(**{**common, "d_mlp": 64}, gated_mlp=True)
    else:  # plain multi-head attention, ungated MLP
        cfg = HookedTransformerConfig(**{**common, "d_mlp": 64})
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _pair(kind: str):
    ref = _model(kind)
    fast = copy.deepcopy(ref)
    assert use_fast_attention(fast) == 3
    use_fast_gated_mlps(fast)
    assert use_fast_unembed(fast)
    return ref, fast


@pytest.mark.parametrize("kind", ["gemma3-like", "plain"])
def test_fast_attention_matches_transformer_lens_with_every_hook(kind, monkeypatch):
    from unlearn_core.model import fast_blocks

    calls = []
    real = fast_blocks.attend
    monkeypatch.setattr(fast_blocks, "attend", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref, fast = _pair(kind)
    toks = torch.randint(0, 61, (2, 13), generator=torch.Generator().manual_seed(1))
    out_r, cache_r = ref.run_with_cache(toks)
    out_f, cache_f = fast.run_with_cache(toks)
    assert len(calls) == 3  # the fast forward ran in every layer (no silent fallback)
    torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=1e-5)
    assert set(cache_f.keys()) == set(cache_r.keys())  # the same hook points fire
    for name in cache_r.keys():
        torch.testing.assert_close(cache_f[name], cache_r[name], atol=1e-5, rtol=1e-5, msg=name)


def test_local_window_is_applied():
    """The window (5) is shorter than the sequence: dropping it would change the local layers."""
    ref, fast = _pair("gemma3-like")
    for block in fast.blocks:
        block.attn.attn_type = "global"
    toks = torch.randint(0, 61, (1, 13), generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(fast(toks), ref(toks), atol=1e-3)


def test_hooks_on_the_pattern_still_act():
    ref, fast = _pair("gemma3-like")
    toks = torch.randint(0, 61, (1, 10), generator=torch.Generator().manual_seed(3))

    def only_self(pattern, hook):
        return torch.eye(pattern.shape[-1]).expand_as(pattern)

    hooks = [("blocks.1.attn.hook_pattern", only_self)]
    torch.testing.assert_close(
        fast.run_with_hooks(toks, fwd_hooks=hooks), ref.run_with_hooks(toks, fwd_hooks=hooks), atol=1e-5, rtol=1e-5
    )
    assert not torch.allclose(fast.run_with_hooks(toks, fwd_hooks=hooks), fast(toks), atol=1e-3)


def test_kv_cached_generation_and_padding_fallback_match():
    ref, fast = _pair("gemma3-like")
    toks = torch.randint(0, 61, (1, 8), generator=torch.Generator().manual_seed(4))
    gen_r = ref.generate(
        toks, max_new_tokens=6, do_sample=False, use_past_kv_cache=True, verbose=False, stop_at_eos=False
    )
    gen_f = fast.generate(
        toks, max_new_tokens=6, do_sample=False, use_past_kv_cache=True, verbose=False, stop_at_eos=False
    )
    assert torch.equal(gen_f, gen_r)
    # a left-padded batch carries an attention mask: the fast forward hands it to TransformerLens
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    torch.testing.assert_close(
        fast(toks.repeat(2, 1), attention_mask=mask), ref(toks.repeat(2, 1), attention_mask=mask), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("kind", ["gemma3-like", "plain"])
def test_block_last_equals_the_block_at_its_last_positions(kind):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    ref = _model(kind)
    block = ref.blocks[2]
    assert attention_supported(block.attn)
    resid = torch.randn(3, 11, 32, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        full = block(resid)
        torch.testing.assert_close(block_last(block, resid, 2), full[:, -2:], atol=1e-5, rtol=1e-5)
        # with cached keys/values for the first 6 positions
        kv = TransformerLensKeyValueCache.init_cache(ref.cfg, "cpu", 3)
        block(resid[:, :6], past_kv_cache_entry=kv.entries[2])
        torch.testing.assert_close(
            block_last(block, resid[:, 6:], 1, kv.entries[2]), full[:, -1:], atol=1e-5, rtol=1e-5
        )


def test_unembed_matches_transformer_lens_with_and_without_bias():
    from unlearn_core.model.forward import target_logprobs, unembed

    model = _model("plain")
    fast = copy.deepcopy(model)
    use_fast_unembed(fast)
    resid = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(6))
    tgt = torch.randint(0, 61, (10,), generator=torch.Generator().manual_seed(7))
    for bias in (0.0, 0.5):
        with torch.no_grad():
            model.unembed.b_U.fill_(bias)
            fast.unembed.b_U.fill_(bias)
        with torch.inference_mode():
            ref = model.unembed(model.ln_final(resid))
            torch.testing.assert_close(fast.unembed(fast.ln_final(resid)), ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(unembed(model, resid), ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(unembed(model, resid, torch.tensor([3, 7])), ref[..., [3, 7]])
            lp = torch.log_softmax(ref.reshape(10, -1), -1)[torch.arange(10), tgt]
            torch.testing.assert_close(target_logprobs(model, resid.reshape(10, 32), tgt, chunk=3), lp)


def test_fast_gated_mlp_matches_transformer_lens():
    model = _model("gated")
    toks = torch.randint(0, 61, (2, 20), generator=torch.Generator().manual_seed(8))
    ref, ref_cache = model.run_with_cache(toks, names_filter=lambda n: "mlp" in n)
    assert use_fast_gated_mlps(model) == 3
    out, cache = model.run_with_cache(toks, names_filter=lambda n: "mlp" in n)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert set(cache.keys()) == set(ref_cache.keys()) and len(cache.keys()) >= 9  # hooks still fire
