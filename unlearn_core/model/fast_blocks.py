"""Copy-free forwards for TransformerLens attention and gated MLPs, and a block run for the last
positions only.

TransformerLens re-lays-out its weights on every call (``W.T.contiguous()`` in GatedMLP,
``rearrange(...).contiguous()`` of W_Q and W_O and ``repeat_interleave`` of grouped keys/values
in attention) to match Hugging Face's bf16 accumulation order. On a CPU in fp32 those copies
cost about as much as the matmuls for a few hundred tokens. These forwards compute the same
function from views of the same parameters, fire the same hook points with the same shapes,
and fall back to TransformerLens's own forward for inputs or configurations they do not cover
(padding masks, alibi, split/4-bit inputs, attention sinks...). Equality with TransformerLens is
tested (``tests/test_fast_blocks.py``).
"""

from __future__ import annotations

import torch

_OLMO = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
# Block layouts whose post-norm placement differs from the pre-norm (+ optional post-norm) one.
_POST_NORM = _OLMO


# --------------------------------------------------------------------------- gated MLP


def _gated_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """TransformerLens's GatedMLP forward without its per-call weight copies (same hooks, same math)."""
    if self.W_gate.device != x.device:
        x = x.to(self.W_gate.device)
    pre_act = self.hook_pre(x @ self.W_gate)
    pre_linear = self.hook_pre_linear(x @ self.W_in)
    post_act = self.hook_post(self.act_fn(pre_act) * pre_linear + self.b_in)
    shape = post_act.shape
    return torch.addmm(self.b_out, post_act.reshape(-1, shape[-1]), self.W_out).view(*shape[:-1], -1)


def use_fast_gated_mlps(model) -> int:
    """Swap in the copy-free GatedMLP forward (fp32 only: in bf16 the layout changes rounding)."""
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    if model.cfg.dtype != torch.float32:
        return 0
    n = 0
    for block in model.blocks:
        mlp = block.mlp
        if type(mlp) is GatedMLP and not (model.cfg.is_layer_norm_activation() and mlp.hook_mid is not None):
            mlp.forward = _gated_mlp_forward.__get__(mlp, GatedMLP)
            n += 1
    return n


# --------------------------------------------------------------------------- unembedding


def _unembed_forward(self, residual: torch.Tensor) -> torch.Tensor:
    """TransformerLens's Unembed forward without copying W_U (671 MB for Gemma) on every call."""
    return self.hook_out(project(self.hook_in(residual), self.W_U, self.b_U))


def project(x: torch.Tensor, W: torch.Tensor, b_full: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., d] @ W [d, n] + b, skipping the bias pass when the full bias ``b_full`` is all zeros
    (``b`` is the bias for W's columns when W is a column subset)."""
    out = (x.reshape(-1, x.shape[-1]) @ W).view(*x.shape[:-1], -1)
    return out if is_zero(b_full) else out + (b_full if b is None else b)


def is_zero(t: torch.Tensor) -> bool:
    """Whether a parameter is all zeros, checked once per version (no device sync per call).
    Gemma has no unembedding bias, and adding zeros to [rows, 262k] logits is a wasted pass."""
    key = (t.data_ptr(), t._version)
    hit = _ZERO.get(id(t))
    if hit is None or hit[0] != key:
        hit = (key, not bool(t.detach().any()))
        _ZERO[id(t)] = hit
    return hit[1]


_ZERO: dict[int, tuple] = {}


def use_fast_unembed(model) -> bool:
    """Swap in the copy-free unembedding (fp32 only). Every full forward and every generated
    token otherwise pays a copy of the whole W_U (671 MB for Gemma; see bench/generate.py)."""
    from transformer_lens.components import Unembed

    if model.cfg.dtype != torch.float32 or type(model.unembed) is not Unembed:
        return False
    model.unembed.forward = _unembed_forward.__get__(model.unembed, Unembed)
    return True


# --------------------------------------------------------------------------- attention


def attention_supported(attn) -> bool:
    """Whether ``attend`` computes exactly what this TransformerLens attention module computes."""
    c = attn.cfg
    return (
        c.dtype == torch.float32
        and c.positional_embedding_type == "rotary"
        and c.attention_dir == "causal"
        and getattr(attn, "_attention_dir_override", None) in (None, "causal")
        and not (
            c.use_split_qkv_input
            or c.use_attn_in
            or c.use_attn_result
            or c.load_in_4bit
            or c.use_logn_attn
            or c.use_attention_sinks
            or c.use_dynamic_ntk_rope
        )
        and c.clip_qkv is None
        and c.original_architecture not in _OLMO
        and not getattr(c, "ungroup_grouped_query_attention", False)
    )


def _kv_weights(attn):
    """The un-repeated key/value weights (grouped-query modules keep them as ``_W_K``)."""
    if hasattr(attn, "_W_K"):
        return attn._W_K, attn._b_K, attn._W_V, attn._b_V
    return attn.W_K, attn.b_K, attn.W_V, attn.b_V


def _q_weight(attn) -> torch.Tensor:
    """W_Q laid out [d_model, heads * d_head] once (re-laid-out only if the parameter changes, or
    if it was laid out under inference mode and autograd may need it now: a fine-tune through the
    model, ``attacks.relearn``, after scoring)."""
    W = attn.W_Q
    key = (W.data_ptr(), W._version)
    cached = attn.__dict__.get("_fast_wq")
    stale = cached is not None and cached[1].is_inference() and not torch.is_inference_mode_enabled()
    if cached is None or cached[0] != key or stale:
        cached = (key, W.permute(1, 0, 2).reshape(W.shape[1], -1).contiguous())
        attn.__dict__["_fast_wq"] = cached
    return cached[1]


def _linear(x: torch.Tensor, W2d: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, d] -> [B, T, heads, dh] as one fused matmul + bias."""
    B, T, d = x.shape
    return torch.addmm(b.reshape(-1), x.reshape(B * T, d), W2d).view(B, T, heads, -1)


def _project_kv(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Keys/values from the [h, d, dh] weight: a view when there is one key/value head."""
    if W.shape[0] == 1:
        return _linear(x, W[0], b, 1)
    return (torch.matmul(x.unsqueeze(1), W) + b[:, None, :]).transpose(1, 2)


def _mask(attn, q_pos: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Causal (and sliding-window for local layers) mask [Tq, S], as TransformerLens builds it."""
    k_pos = torch.arange(n_keys, device=q_pos.device)
    m = k_pos[None, :] <= q_pos[:, None]
    if attn.attn_type == "local":
        m = m & (k_pos[None, :] > q_pos[:, None] - attn.cfg.window_size)
    return m


def _rotate(attn, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """TransformerLens's rotary embedding at explicit positions (queries need not be contiguous)."""
    if int(pos.max()) + 1 > attn.rotary_cos.shape[0]:
        attn._extend_rotary_embeddings(min(attn.cfg.n_ctx, max(int(pos.max()) + 1, 2 * attn.rotary_cos.shape[0])))
    rd = attn.cfg.rotary_dim
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    out = (
        x_rot * attn.rotary_cos[pos][None, :, None, :]
        + attn.rotate_every_two(x_rot) * attn.rotary_sin[pos][None, :, None, :]
    )
    return torch.cat([out, x_pass], dim=-1) if x_pass.shape[-1] else out


def attend(attn, xq: torch.Tensor, xkv: torch.Tensor, past_kv_cache_entry=None) -> torch.Tensor:
    """Attention output for queries at the *last* ``xq.shape[1]`` positions of the sequence
    (cached keys/values, then ``xkv``'s). With ``xq is xkv`` this is the module's forward."""
    from transformer_lens.utilities.activation_functions import apply_softcap

    B, Tq, _ = xq.shape
    W_K, b_K, W_V, b_V = _kv_weights(attn)
    q = attn.hook_q(_linear(xq, _q_weight(attn), attn.b_Q, attn.W_Q.shape[0]))
    k = attn.hook_k(_project_kv(xkv, W_K, b_K))
    v = attn.hook_v(_project_kv(xkv, W_V, b_V))
    if attn.cfg.use_qk_norm:
        q = attn._apply_qk_norm(q, attn.q_norm)
        k = attn._apply_qk_norm(k, attn.k_norm)
    if past_kv_cache_entry is not None:
        k, v = past_kv_cache_entry.append(k, v)
    S = k.shape[1]
    q_pos = torch.arange(S - Tq, S, device=xq.device)
    q = attn.hook_rot_q(_rotate(attn, q, q_pos))
    k = attn.hook_rot_k(_rotate(attn, k, torch.arange(S, device=xq.device)))
    H, Kh, dh = q.shape[2], k.shape[2], q.shape[3]
    G = H // Kh  # query heads per key/value head (grouped-query attention), no repeat needed
    qg = q.permute(0, 2, 1, 3).reshape(B, Kh, G * Tq, dh)
    scores = (qg @ k.permute(0, 2, 3, 1)).view(B, H, Tq, S) / attn.attn_scale
    scores = apply_softcap(scores, attn.cfg.attn_scores_soft_cap)
    scores = torch.where(_mask(attn, q_pos, S)[None, None], scores, attn.IGNORE.to(scores.device))
    scores = attn.hook_attn_scores(scores)
    pattern = torch.softmax(scores, dim=-1)
    pattern = attn.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
    z = (pattern.reshape(B, Kh, G * Tq, S) @ v.permute(0, 2, 1, 3)).view(B, H, Tq, dh)
    z = attn.hook_z(z.permute(0, 2, 1, 3))
    W_O = attn.W_O.reshape(H * dh, -1)  # a view: W_O is [heads, d_head, d_model]
    return torch.addmm(attn.b_O, z.reshape(B * Tq, H * dh), W_O).view(B, Tq, -1)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and torch.equal(a, b))


def _attention_forward(
    self,
    query_input,
    key_input,
    value_input,
    past_kv_cache_entry=None,
    additive_attention_mask=None,
    attention_mask=None,
    position_bias=None,
):
    # TransformerLens blocks pass three separately normalised (equal) copies of the same input
    if (
        attention_mask is not None
        or additive_attention_mask is not None
        or position_bias is not None
        or not (_same(query_input, key_input) and _same(key_input, value_input))
    ):
        return type(self).forward(
            self,
            query_input,
            key_input,
            value_input,
            past_kv_cache_entry,
            additive_attention_mask,
            attention_mask,
            position_bias,
        )
    return attend(self, query_input, key_input, past_kv_cache_entry)


def use_fast_attention(model) -> int:
    """Swap in the copy-free attention forward where it is exact; returns how many layers."""
    n = 0
    for block in model.blocks:
        attn = block.attn
        if attention_supported(attn):
            attn.forward = _attention_forward.__get__(attn, type(attn))
            n += 1
    return n


# --------------------------------------------------------------------------- blocks


def block_supported(block) -> bool:
    c = block.cfg
    return (
        attention_supported(block.attn)
        and not c.attn_only
        and not c.parallel_attn_mlp
        and c.original_architecture not in _POST_NORM
        and c.positional_embedding_type != "shortformer"
    )


def block_last(block, resid: torch.Tensor, n_last: int, past_kv_cache_entry=None) -> torch.Tensor:
    """A block's output at the last ``n_last`` positions only: keys/values are computed for every
    position (later queries attend to them), queries, attention output and MLP only where read."""
    x = block.ln1(resid)
    attn_out = attend(block.attn, x[:, -n_last:], x, past_kv_cache_entry)
    if block.cfg.use_normalization_before_and_after:
        attn_out = block.ln1_post(attn_out)
    resid_mid = resid[:, -n_last:] + attn_out
    return resid_mid + block.apply_mlp(block.ln2(resid_mid))
