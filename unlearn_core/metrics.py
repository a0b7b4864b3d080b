"""Loss added, perplexity and generation, clean and intervened.

Perplexity method (documented so numbers are comparable): the documents are tokenized,
joined with BOS between them, cut into non-overlapping windows of ``ctx`` tokens, each window
is prefixed with BOS, and ppl = exp(mean next-token NLL over every predicted token). Loss
added uses the same windows: intervened mean loss minus clean mean loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from . import cache as C
from .engine import Engine
from .forward import pad_right, token_logprobs
from .interventions import Intervention


def corpus_windows(model, docs: list[str], n_tokens: int, ctx: int = 256) -> list[list[int]]:
    """Windows of up to ``ctx`` tokens (BOS + ctx-1 text tokens), ``n_tokens`` predicted tokens in total."""
    tok = model.tokenizer
    bos = tok.bos_token_id
    stream: list[int] = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"]
        if bos is not None:
            stream.append(bos)
        if len(stream) >= n_tokens * 1.1 + ctx:
            break
    windows, step = [], ctx - 1
    budget = n_tokens
    for s in range(0, len(stream), step):
        if budget <= 0:
            break
        w = stream[s : s + min(step, budget)]
        if len(w) < 2:
            break
        windows.append(([bos] if bos is not None else []) + w)
        budget -= len(w)
    return windows


@torch.inference_mode()
def mean_nll(engine: Engine, windows: list[list[int]], interventions: list[Intervention] | None = None,
             batch_size: int = 4, progress=None) -> tuple[float, int]:
    """(mean NLL per predicted token, number of predicted tokens)."""
    hooks = engine.hooks(interventions)
    total, n = 0.0, 0
    for s in range(0, len(windows), batch_size):
        batch = windows[s : s + batch_size]
        tokens, lens = pad_right(batch, 0)
        for lp in token_logprobs(engine.model, tokens, lens, hooks):
            total += float(-lp.sum())
            n += lp.numel()
        if progress:
            progress(sum(len(w) - 1 for w in batch))
    return (total / n if n else float("nan")), n


@dataclass
class LossAdded:
    clean_loss: float
    intervened_loss: float
    loss_added: float
    n_tokens: int
    corpus: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def clean_nll_cached(engine: Engine, corpus: str, windows: list[list[int]], progress=None) -> float:
    key = C.key_of("clean_nll", engine.cache_namespace(), corpus, windows)
    path = Path(engine.settings.cache_dir) / "baselines" / f"{key}.json"
    return C.cached_json(path, lambda: mean_nll(engine, windows, None, progress=progress)[0])


def loss_added(engine: Engine, docs: list[str], interventions: list[Intervention], n_tokens: int = 50_000,
               ctx: int = 256, corpus: str = "corpus", progress=None) -> LossAdded:
    windows = corpus_windows(engine.model, docs, n_tokens, ctx)
    clean = clean_nll_cached(engine, corpus, windows, progress)
    inter, n = mean_nll(engine, windows, interventions, progress=progress)
    return LossAdded(clean, inter, inter - clean, n, corpus)


def perplexity(engine: Engine, docs: list[str], interventions: list[Intervention] | None = None,
               n_tokens: int = 20_000, ctx: int = 256, progress=None) -> dict:
    windows = corpus_windows(engine.model, docs, n_tokens, ctx)
    nll, n = mean_nll(engine, windows, interventions, progress=progress)
    return {"perplexity": math.exp(nll), "mean_nll": nll, "n_tokens": n, "ctx": ctx}


@torch.inference_mode()
def generate(engine: Engine, prompt: str, interventions: list[Intervention] | None = None,
             max_new_tokens: int = 40, temperature: float = 0.0, seed: int = 0) -> str:
    """Greedy (temperature 0) or sampled continuation, with the KV cache.

    The intervention hooks stay attached for every step, and single-token cached steps are
    treated as continuations (their position 0 is a generated token, not BOS).
    """
    model = engine.model
    if max_new_tokens < 1 or max_new_tokens > 512:
        raise ValueError("max_new_tokens must be between 1 and 512")
    torch.manual_seed(seed)
    with model.hooks(fwd_hooks=engine.hooks(interventions)):
        out = model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                             temperature=max(temperature, 1e-5), use_past_kv_cache=True, verbose=False,
                             stop_at_eos=True, return_type="str", prepend_bos=True)
    return out[len(prompt):] if out.startswith(prompt) else out


def generate_pair(engine: Engine, prompt: str, interventions: list[Intervention], **kw) -> dict:
    return {"prompt": prompt, "base": generate(engine, prompt, None, **kw),
            "intervened": generate(engine, prompt, interventions, **kw)}
