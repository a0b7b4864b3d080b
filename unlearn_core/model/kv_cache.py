"""Prompts run once into a KV cache, then continued as one batch (cloze answers, generated tokens).

Why a module: cloze scoring (``evaluation.cloze_cached``) and batched generation
(``evaluation.generate_batch``) both run a batch of right-padded prompts once, keeping every
layer's keys/values, and then continue each row from its own prompt's end. Right padding leaves
a gap of pad slots between a short prompt and its continuation; ``left_aligned`` moves each
prompt flush against the continuation and masks the slots in front, so TransformerLens's masked
attention gives every row its own positions (rotary reads the mask's count) and, the prompt and
its continuation being contiguous, the true distances a sliding-window (local) layer masks by.
"""

from __future__ import annotations

import torch


def supported(model) -> bool:
    """Rotary positions on one device: the prompt pass (``run_blocks``) adds no position embedding."""
    return model.cfg.positional_embedding_type == "rotary" and getattr(model.cfg, "n_devices", 1) == 1


def new_entries(model, batch: int) -> list:
    """One empty cache entry per layer for ``batch`` rows."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    return [Entry.init_cache_entry(model.cfg, model.cfg.device, batch) for _ in model.blocks]


def run_blocks(model, tokens: torch.Tensor, entries: list) -> torch.Tensor:
    """Final residual [B, T, d] of ``tokens`` from position 0 (hooks fire as in a forward from
    tokens), keys/values appended to ``entries``. No attention mask, so the copy-free attention
    runs: right padding is harmless, attention being causal."""
    tokens = tokens.to(model.cfg.device)
    if model.cfg.use_hook_tokens:
        tokens = model.hook_tokens(tokens)
    x = model.hook_embed(model.embed(tokens))
    for block, entry in zip(model.blocks, entries):
        x = block(x, past_kv_cache_entry=entry)
    return x


def left_aligned(entries: list, lens: torch.Tensor, rows: torch.Tensor):
    """A cache for continuation rows: row r continues prompt ``rows[r]`` of the prompt pass whose
    keys/values are in ``entries`` (prompt b's real length ``lens[b]``). Each prompt is moved to
    the right end, its padding (now in front) masked out."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache as Cache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    T = entries[0].past_keys.shape[1]
    dev = entries[0].past_keys.device
    shift = (T - lens).to(dev)
    src = (torch.arange(T, device=dev)[None, :] - shift[:, None]) % T  # slot s of row b reads slot src[b, s]
    mask = (torch.arange(T, device=dev)[None, :] >= shift[:, None]).to(torch.long)
    rows = rows.to(dev)

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, src[:, :, None, None].expand_as(t))[rows]

    return Cache([Entry(move(e.past_keys), move(e.past_values)) for e in entries], mask[rows])


def continue_rows(model, tokens: torch.Tensor, cache) -> torch.Tensor:
    """Final residual [R, C, d] of ``tokens`` after each row's cached prompt (masked attention;
    trailing right padding harmless). The cache grows by these tokens."""
    tokens = tokens.to(model.cfg.device)
    ones = torch.ones_like(tokens)
    return model(tokens, past_kv_cache=cache, attention_mask=ones, stop_at_layer=model.cfg.n_layers)
