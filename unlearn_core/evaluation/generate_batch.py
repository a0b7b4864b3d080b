"""Greedy generation of many prompts at once, with the texts ``metrics.generate`` gives one by one.

Why: on a CPU each generated token of one prompt reads the 262k x 640 unembedding (671 MB in
fp32) and every block's weights; a batch of prompts reads them once per step. The attack bench
generates a defence's whole probe set, so it runs them as one batch.

How, with the texts of one prompt alone: the prompts run as one right-padded batch (each its
BOS at position 0, a gate counting its own tokens: ``gate_prompt``), keeping their keys/values;
then each prompt is moved flush against its continuation (``kv_cache.left_aligned``) and the
generated tokens go through as one batch of continuation steps under masked attention (each row
its own positions): a static clamp acts on every generated token, a gate keeps its prompt's
decision. Rows stop at EOS as ``generate`` does; their later tokens are EOS, dropped by the
decoding. The arithmetic differs from one prompt alone only in rounding (~1e-6), so a greedy
choice could differ only at a near tie; the tests compare texts, and ``bench/attack_speed.py``
the bench's own probes on the embedded model.
"""

from __future__ import annotations

import torch

from unlearn_core.method.interventions import HookState, Intervention, gate_prompt
from unlearn_core.model import kv_cache as KV
from unlearn_core.model.forward import pad_id, pad_right, unembed

BATCH = 48  # prompts per batch: logits [B, 262k] in fp32 are 1 MB a row


@torch.inference_mode()
def _batch(engine, prompts: list[str], interventions, max_new_tokens: int) -> list[str]:
    model = engine.model
    eos = model.tokenizer.eos_token_id
    tokens = [model.to_tokens(p, prepend_bos=True)[0].tolist() for p in prompts]
    lens = torch.tensor([len(t) for t in tokens])
    rows = torch.arange(len(prompts))
    state = HookState()
    with model.hooks(fwd_hooks=engine.hooks(interventions, state)):
        entries = KV.new_entries(model, len(prompts))
        state.continuation = False
        with gate_prompt(lens.tolist()):  # each prompt's gate counts its own tokens
            h = KV.run_blocks(model, pad_right(tokens, pad_id(model))[0], entries)
        tok = unembed(model, h[rows, lens.to(h.device) - 1]).float().argmax(-1)
        cache = KV.left_aligned(entries, lens, rows)
        state.continuation = True  # every later pass continues its row's prompt, with its decision
        finished = tok == eos
        out = [tok]
        for _ in range(max_new_tokens - 1):
            if bool(finished.all()):
                break
            tok = unembed(model, KV.continue_rows(model, tok[:, None], cache)[:, -1]).float().argmax(-1)
            tok[finished] = eos
            finished |= tok == eos
            out.append(tok)
    gen = torch.stack(out, 1).cpu()
    texts = []
    for p, t, g in zip(prompts, tokens, gen):
        text = model.tokenizer.decode(t + g.tolist(), skip_special_tokens=True)
        texts.append(text[len(p) :] if text.startswith(p) else text)
    return texts


def generate_greedy(
    engine, prompts: list[str], interventions: list[Intervention] | None = None, max_new_tokens: int = 40
) -> list[str]:
    """Each prompt's greedy continuation (``metrics.generate`` at temperature 0), ``BATCH`` at a
    time; one at a time through ``generate`` itself where ``kv_cache`` does not support the model."""
    if max_new_tokens < 1 or max_new_tokens > 512:
        raise ValueError("max_new_tokens must be between 1 and 512")
    ivs = list(interventions or []) or None
    if not KV.supported(engine.model):
        from unlearn_core.evaluation.metrics import generate

        return [generate(engine, p, ivs, max_new_tokens=max_new_tokens) for p in prompts]
    out: list[str] = []
    for s in range(0, len(prompts), BATCH):
        out += _batch(engine, prompts[s : s + BATCH], ivs, max_new_tokens)
    return out
