"""Quality of an SAE on held-out text: L0, explained variance, dead and dense features, and what
splicing it in costs: Δloss (spliced minus clean next-token loss, nats) per corpus, loss
recovered, and WikiText-2 perplexity with the SAE spliced in and nothing clamped (the control the
Gemma Scope study lacked).

Loss recovered = (L_zero - L_spliced) / (L_zero - L_clean): L_clean is the model's next-token
loss, L_spliced the loss with the SAE reconstruction in place of the activation at its hook
(the "reconstruct, nothing clamped" intervention), L_zero the loss with that activation zeroed.
BOS is left untouched in every condition, as in all our interventions.
"""

from __future__ import annotations

import torch

from unlearn_core.evaluation.metrics import corpus_windows, mean_nll
from unlearn_core.features.specificity import DENSE_FREQ
from unlearn_core.features.stats import counted_mask, layer_of_hook
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import pad_right


@torch.inference_mode()
def reconstruction_stats(
    engine: Engine,
    sae_key: str,
    docs: list[str],
    n_tokens: int = 50_000,
    ctx: int = 128,
    batch_size: int = 16,
    progress=None,
) -> dict:
    loaded = engine.saes[sae_key]
    sae, model = loaded.sae, engine.model
    windows = corpus_windows(model, docs, n_tokens, ctx)
    n, l0_sum, sse, sum_x = 0, 0.0, 0.0, None
    sq_x = 0.0
    fired = torch.zeros(loaded.d_sae, dtype=torch.float64)  # tokens each feature is active on
    for s in range(0, len(windows), batch_size):
        toks, lens = pad_right(windows[s : s + batch_size], 0)
        acts = {}
        with model.hooks(fwd_hooks=[(loaded.hook_name, lambda x, hook, acts=acts: acts.__setitem__("x", x))]):
            model(toks, stop_at_layer=layer_of_hook(loaded.hook_name))
        mask = counted_mask(engine, toks, lens)
        x = acts["x"][mask].double()
        f = sae.encode(x.float())
        xh = sae.decode(f).double()
        n += x.shape[0]
        l0_sum += float((f > 0).sum())
        sse += float(((x - xh) ** 2).sum())
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
        sq_x += float((x**2).sum())
        fired += (f > 0).sum(0).cpu().double()
        if progress:
            progress(x.shape[0])
    total_var = sq_x - float((sum_x**2).sum()) / n
    freq = fired / max(n, 1)
    return {
        "n_tokens": n,
        "l0": l0_sum / n,
        "explained_variance": 1 - sse / total_var,
        "dead_fraction": float((fired == 0).double().mean()),
        "dense_fraction": float((freq > DENSE_FREQ).double().mean()),
        "d_sae": loaded.d_sae,
    }


def _zero_hook(x, hook):
    out = torch.zeros_like(x)
    out[:, 0] = x[:, 0]
    return out


def loss_recovered(
    engine: Engine, sae_key: str, docs: list[str], n_tokens: int = 10_000, ctx: int = 128, progress=None
) -> dict:
    windows = corpus_windows(engine.model, docs, n_tokens, ctx)
    clean, n = mean_nll(engine, windows, None, progress=progress)
    spliced, _ = mean_nll(engine, windows, [Intervention(sae_key, (), 0.0, "reconstruct")], progress=progress)
    hook = engine.saes[sae_key].hook_name
    with engine.model.hooks(fwd_hooks=[(hook, _zero_hook)]):
        zero, _ = mean_nll(engine, windows, None, progress=progress)
    return {
        "n_tokens": n,
        "clean_loss": clean,
        "spliced_loss": spliced,
        "zero_ablation_loss": zero,
        "loss_recovered": (zero - spliced) / (zero - clean),
    }


def corpus_report(
    engine: Engine, sae_key: str, corpora: dict[str, list[str]], n_tokens: int = 10_000, ctx: int = 128, progress=None
) -> dict[str, dict]:
    """Per corpus: clean, spliced and zero-ablated loss, Δloss = spliced - clean (nats) and loss
    recovered, each on its own first ``n_tokens``."""
    out = {}
    for name, docs in corpora.items():
        r = loss_recovered(engine, sae_key, docs, n_tokens, ctx, progress)
        out[name] = {**r, "delta_loss": r["spliced_loss"] - r["clean_loss"]}
    return out


def spliced_perplexity(
    engine: Engine, sae_key: str, docs: list[str], n_tokens: int = 20_000, ctx: int = 256, progress=None
) -> dict:
    """Perplexity clean and with the SAE spliced in, nothing clamped (the "SAE in, nothing ablated"
    control: what the SAE alone does to the text)."""
    import math

    windows = corpus_windows(engine.model, docs, n_tokens, ctx)
    clean, n = mean_nll(engine, windows, None, progress=progress)
    spliced, _ = mean_nll(engine, windows, [Intervention(sae_key, (), 0.0, "reconstruct")], progress=progress)
    return {"n_tokens": n, "ctx": ctx, "clean": math.exp(clean), "spliced": math.exp(spliced)}
