"""Cloze scoring with each question's prefix run once: its answers attend to its keys/values.

Why: the row path (``mcq.cloze_logliks_batch``) runs each choice as its own row, the whole prefix
repeated four times (and padded to the batch's longest row). For a few-shot prompt (8 answered
questions, ~190 tokens) or a question behind filler text the prefix is nearly all the work, so the
attack bench spent most of its time there. Here a batch takes two forwards: the questions'
prefixes (right-padded, as the row path pads them), keeping every layer's keys/values; then every
choice's tokens but its last, attending to its own question's prefix. All questions' answer
positions then go through one pass of the unembedding, as before.

Exact for every intervention mode: the static modes act per position (the prefix pass is a
prompt, BOS at position 0 left alone; the continuation positions are never BOS). A gated mode
decides once per prompt on its prefix (rho over each row's own prefix, ``gate_prompt``, as the
row path counts it), and the continuation pass is told it continues those prompts: the hooks
keep each question's decision (``HookState.open``, one entry per continuation row) instead of
measuring again. Sliding-window (local) attention layers are exact too: for the continuation the
prefixes are moved flush against it (``kv_cache.left_aligned``), so the masked attention sees each
row's true distances and positions; the tests check it on a model with a window shorter than
every prefix.
"""

from __future__ import annotations

import torch

from unlearn_core.method.interventions import HookState, Intervention, gate_prompt
from unlearn_core.model import kv_cache as KV
from unlearn_core.model.forward import pad_right, target_logprobs

# Prefix tokens (BOS included) from which scoring takes this path. ``bench/attack_speed.py`` on the
# embedded model (2026-12-07, AMD EPYC, 2 cores shared with other work, 8 questions a batch, best
# of 2) found it faster at every length it tried, clean / gated: plain questions (13 tokens)
# 1.15x / 1.42x, context probes (30) 1.56x / 2.30x, few-shot k = 1 (33) 1.47x / 1.58x, filler (77)
# 2.09x / 1.97x, k = 3 (77) 2.74x / 1.76x, k = 8 (186) 2.82x / 2.92x: the prefixes run once, and
# the answer rows are a fraction of the row path's padded rows. So 0: every cloze question, where
# the model is ``supported``.
CACHE_FROM = 0


def use_cache(model, prefix_len: int) -> bool:
    return KV.supported(model) and prefix_len >= CACHE_FROM


def _carry(state: HookState, question: torch.Tensor) -> None:
    """The next pass continues the prompts just run (row r continues prompt ``question[r]``):
    every row keeps its prompt's gate decision instead of measuring again."""
    state.continuation = True
    for i, decided in state.open.items():
        state.open[i] = decided[question.to(decided.device)]


@torch.inference_mode()
def cached_logliks(
    engine, rows: list[tuple[list[int], list[list[int]]]], interventions: list[Intervention] | None = None
) -> list[torch.Tensor]:
    """Per question (its BOS + prefix tokens and each choice's tokens, ``mcq.cloze_rows``), the
    mean log-likelihood of each choice, [n choices]: the numbers of ``mcq.cloze_logliks_batch``."""
    if not rows:
        return []
    model = engine.model
    pad = model.tokenizer.pad_token_id or 0
    plens = torch.tensor([len(p) for p, _ in rows])
    conts = [(b, c) for b, (_, cs) in enumerate(rows) for c in cs]
    longer = [(b, c) for b, c in conts if len(c) > 1]
    state = HookState()
    with model.hooks(fwd_hooks=engine.hooks(interventions, state)):
        entries = KV.new_entries(model, len(rows))
        state.continuation = False
        with gate_prompt(plens.tolist()):
            h = KV.run_blocks(model, pad_right([p for p, _ in rows], pad)[0], entries)
        first = h[torch.arange(len(rows)), plens.to(h.device) - 1]  # predicts each choice's first token
        if longer:
            question = torch.tensor([b for b, _ in longer])
            cache = KV.left_aligned(entries, plens, question)
            _carry(state, question)
            rest = KV.continue_rows(model, pad_right([c[:-1] for _, c in longer], pad)[0], cache)
    resid, r = [], 0
    for b, c in conts:
        resid.append(first[b : b + 1])
        if len(c) > 1:
            resid.append(rest[r, : len(c) - 1])
            r += 1
    targets = torch.tensor([t for _, c in conts for t in c])
    tok_lp = target_logprobs(model, torch.cat(resid), targets, chunk=256)
    means = torch.stack([part.mean() for part in tok_lp.split([len(c) for _, c in conts])]).cpu()
    return list(means.split([len(cs) for _, cs in rows]))
