"""End-to-end (KL) fine-tune of an SAE's decoder, for Δloss.

Why: the embedded SAE is trained on MSE of whitened residuals, and more steps of that objective
made the next-token loss worse (docs/results/sae_retrain_b1024.md). Here the decoder (W_dec,
b_dec) is trained to minimise KL(clean || spliced) of the model's next-token distributions, with
the SAE's reconstruction in place of the residual at its hook (as in Karvonen 2025, "a short
fine-tune is all you need"). The encoder and thresholds are frozen, so which features fire (L0,
dead and dense fractions, feature search, descriptions) is unchanged; the decoder rows are
re-normalised on save (``train_sae.fold_decoder_norm``), which preserves the reconstruction.
"""
from __future__ import annotations

import time

import torch

from .engine import Engine
from .features import counted_mask, layer_of_hook
from .forward import pad_right
from .metrics import corpus_windows


def kl_finetune(engine: Engine, sae_key: str, docs: list[str], n_tokens: int = 100_000, ctx: int = 128,
                batch_size: int = 8, lr: float = 1e-4, max_minutes: float | None = None, progress=None) -> dict:
    """Train the decoder of ``engine.saes[sae_key]`` in place; returns the mean KL per step."""
    loaded = engine.saes[sae_key]
    sae, model = loaded.sae, engine.model
    layer = layer_of_hook(loaded.hook_name)
    if not loaded.hook_name.endswith("hook_resid_post"):
        raise ValueError("the KL fine-tune splices at a residual-stream hook (blocks.L.hook_resid_post)")
    windows = corpus_windows(model, docs, n_tokens, ctx)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in sae.parameters():
        p.requires_grad_(False)
    params = [sae.W_dec, sae.b_dec]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    deadline = time.time() + max_minutes * 60 if max_minutes else None
    kls, t0 = [], time.time()
    for s in range(0, len(windows), batch_size):
        toks, lens = pad_right(windows[s : s + batch_size], 0)
        mask = counted_mask(engine, toks, lens)
        with torch.no_grad():
            resid = model(toks, stop_at_layer=layer)
            clean = torch.log_softmax(model(resid, start_at_layer=layer)[mask].float(), -1)
            codes = sae.encode(resid.to(sae.W_enc.dtype))
        recon = sae.decode(codes)
        keep = (~mask).unsqueeze(-1)  # BOS, specials and padding keep the clean residual
        spliced = torch.where(keep, resid.to(recon.dtype), recon).to(resid.dtype)
        logp = torch.log_softmax(model(spliced, start_at_layer=layer)[mask].float(), -1)
        kl = (clean.exp() * (clean - logp)).sum(-1).mean()
        opt.zero_grad()
        kl.backward()
        opt.step()
        kls.append(float(kl.detach()))
        if progress:
            progress(int(mask.sum()), float(kl))
        if deadline and time.time() > deadline:
            break
    for p in params:
        p.requires_grad_(False)
    return {"steps": len(kls), "kl_first": kls[0] if kls else None, "kl_last10": sum(kls[-10:]) / max(len(kls[-10:]), 1),
            "seconds": time.time() - t0, "tokens": int(sum(len(w) for w in windows[: len(kls) * batch_size]))}


def folded_state(sae) -> dict[str, torch.Tensor]:
    """The fine-tuned SAE's state with unit-norm decoder rows (same reconstruction)."""
    from .train_sae import fold_decoder_norm

    return fold_decoder_norm({k: v.detach() for k, v in sae.state_dict().items()})
