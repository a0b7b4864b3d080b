"""End-to-end (KL) fine-tune of an SAE's decoder, for Δloss.

Why: the embedded SAE is trained on MSE of whitened residuals, and more steps of that objective
made the next-token loss worse (docs/reports/sae_retrain_b1024.md). Here the decoder (W_dec,
b_dec) is trained to minimise KL(clean || spliced) of the model's next-token distributions, with
the SAE's reconstruction in place of the residual at its hook (as in Karvonen 2025, "a short
fine-tune is all you need"). The encoder and thresholds are frozen, so which features fire (L0,
dead and dense fractions, feature search, descriptions) is unchanged; the decoder rows are
re-normalised on save (``train_sae.fold_decoder_norm``), which preserves the reconstruction.

Cost: on a CPU the 262k-token unembedding dominates a step, so the KL is taken on a random
``pos_fraction`` of each window's positions (the blocks after the hook still run on every
position, since attention needs them). The run is resumable: decoder, Adam state and step are
checkpointed (``training.checkpoints``) every ``checkpoint_every`` steps and when time runs out.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from unlearn_core.evaluation.metrics import corpus_windows
from unlearn_core.features.stats import counted_mask, layer_of_hook
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import pad_right
from unlearn_core.training import checkpoints as CK
from unlearn_core.training.train_sae import PieceDone, fold_decoder_norm, training_texts


@dataclass(frozen=True)
class KLFinetuneConfig:
    n_tokens: int = 300_000  # predicted tokens of training text gone through once
    ctx: int = 128
    batch_size: int = 8  # windows per step
    pos_fraction: float = 0.25  # share of counted positions whose KL is taken (the unembedding's cost)
    lr: float = 3e-5  # 1e-4 and up made the dev KL worse within 12 steps (Adam's first steps are sign steps)
    warmup_steps: int = 10  # linear warm-up of the learning rate
    seed: int = 0
    offset_tokens: int = 0  # skip this much of the training text: a further pass on text the last one did not see
    checkpoint_every: int = 20

    def check(self) -> None:
        """Clear errors for settings that would train nothing or diverge silently."""
        if self.n_tokens < 1 or self.ctx < 2 or self.batch_size < 1:
            raise ValueError("tokens, ctx and batch size must be positive (ctx at least 2)")
        if not 0 < self.pos_fraction <= 1:
            raise ValueError(f"pos_fraction must be in (0, 1], got {self.pos_fraction}")
        if not 0 < self.lr < 1:
            raise ValueError(f"the learning rate must be in (0, 1), got {self.lr}")
        if self.warmup_steps < 0 or self.offset_tokens < 0 or self.checkpoint_every < 1:
            raise ValueError("warmup_steps and offset_tokens must be >= 0, checkpoint_every >= 1")

    def run_key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def tail_logits(model, resid: torch.Tensor, layer: int, positions: torch.Tensor) -> torch.Tensor:
    """Logits [n, vocab] at ``positions`` (a [B, T] bool mask) from the residual entering block
    ``layer``: the same computation as ``model(resid, start_at_layer=layer)[positions]``, with
    the unembedding only where it is needed."""
    from transformer_lens.utilities import apply_softcap

    for block in model.blocks[layer:]:
        resid = block(resid)
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    logits = model.unembed(resid[positions].unsqueeze(0))[0]
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def training_windows(model, docs: list[str], cfg: KLFinetuneConfig) -> list[list[int]]:
    """The pass's windows: ``cfg.n_tokens`` of the text after the first ``cfg.offset_tokens``."""
    windows = corpus_windows(model, docs, cfg.offset_tokens + cfg.n_tokens, cfg.ctx)
    k, done = 0, 0
    while k < len(windows) and done < cfg.offset_tokens:
        done += len(windows[k]) - 1
        k += 1
    return windows[k:]


def _sample_positions(mask: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    if fraction >= 1:
        return mask
    pick = torch.rand(mask.shape, generator=gen) < fraction
    return mask & pick


CHECKPOINT = "checkpoint.safetensors"  # in the run's folder (training.checkpoints' format)


def _params(sae) -> dict[str, torch.Tensor]:
    return {"W_dec": sae.W_dec, "b_dec": sae.b_dec}


def _save_checkpoint(root: Path, sae, opt, cfg: KLFinetuneConfig, step: int, seconds: float, kls: list[float]) -> None:
    """Decoder, Adam moments and counters (one file, written atomically)."""
    CK.save(
        root / CHECKPOINT, _params(sae), opt, {"run_key": cfg.run_key(), "step": step, "seconds": seconds, "kl": kls}
    )


def _load_checkpoint(root: Path, sae, opt, cfg: KLFinetuneConfig) -> tuple[int, float, list[float]]:
    path = root / CHECKPOINT
    if not path.exists():
        return 0, 0.0, []
    if CK.read_meta(path)["run_key"] != cfg.run_key():
        raise ValueError(f"{root} holds a fine-tune checkpoint of other settings; delete it or choose another folder")
    run = CK.load(path, _params(sae), opt)
    return run["step"], run["seconds"], run["kl"]


def kl_finetune(
    engine: Engine,
    sae_key: str,
    docs: list[str],
    cfg: KLFinetuneConfig = KLFinetuneConfig(),
    checkpoint_dir: str | Path | None = None,
    max_minutes: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train the decoder of ``engine.saes[sae_key]`` in place over ``cfg.n_tokens`` of ``docs``,
    resuming from ``checkpoint_dir`` if it holds a checkpoint. Returns a report when the pass is
    complete; raises ``PieceDone`` (after a checkpoint) when ``max_minutes`` runs out first."""
    cfg.check()
    if max_minutes is not None and max_minutes < 0:
        raise ValueError("max_minutes must be >= 0")
    loaded = engine.saes[sae_key]
    sae, model = loaded.sae, engine.model
    if not loaded.hook_name.endswith("hook_resid_post"):
        raise ValueError("the KL fine-tune splices at a residual-stream hook (blocks.L.hook_resid_post)")
    layer = layer_of_hook(loaded.hook_name)
    windows = training_windows(model, docs, cfg)
    steps = (len(windows) + cfg.batch_size - 1) // cfg.batch_size
    for p in model.parameters():
        p.requires_grad_(False)
    for p in sae.parameters():
        p.requires_grad_(False)
    params = [sae.W_dec, sae.b_dec]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    root = Path(checkpoint_dir) if checkpoint_dir else None
    start, spent, kls = _load_checkpoint(root, sae, opt, cfg) if root else (0, 0.0, [])
    deadline = time.time() + max_minutes * 60 if max_minutes is not None else None
    t0 = time.time()
    try:
        for step in range(start, steps):
            if root and step > start and (step % cfg.checkpoint_every == 0 or (deadline and time.time() > deadline)):
                _save_checkpoint(root, sae, opt, cfg, step, spent + time.time() - t0, kls)
                if deadline and time.time() > deadline:
                    raise PieceDone(f"stopped at step {step} of {steps}; run again to resume")
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            toks, lens = pad_right(windows[step * cfg.batch_size : (step + 1) * cfg.batch_size], 0)
            mask = counted_mask(engine, toks, lens)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            pos = _sample_positions(mask, cfg.pos_fraction, gen)
            if not pos.any():
                pos = mask
            with torch.no_grad():
                resid = model(toks, stop_at_layer=layer)
                clean = torch.log_softmax(tail_logits(model, resid, layer, pos).float(), -1)
                codes = sae.encode(resid.to(sae.W_enc.dtype))
            recon = sae.decode(codes)
            keep = (~mask).unsqueeze(-1)  # BOS, specials and padding keep the clean residual
            spliced = torch.where(keep, resid.to(recon.dtype), recon).to(resid.dtype)
            logp = torch.log_softmax(tail_logits(model, spliced, layer, pos).float(), -1)
            kl = (clean.exp() * (clean - logp)).sum(-1).mean()
            opt.zero_grad()
            kl.backward()
            opt.step()
            kls.append(round(float(kl.detach()), 5))
            if progress:
                progress(step + 1, steps, kls[-1])
    finally:
        for p in params:
            p.requires_grad_(False)
    seconds = spent + time.time() - t0
    if root:
        _save_checkpoint(root, sae, opt, cfg, steps, seconds, kls)
    return {
        "config": asdict(cfg),
        "steps": steps,
        "windows": len(windows),
        "seconds": round(seconds, 1),
        "kl_first10": _mean(kls[:10]),
        "kl_last10": _mean(kls[-10:]),
        "kl_per_step": kls,
    }


def _mean(x: list[float]) -> float | None:
    return round(sum(x) / len(x), 5) if x else None


def finetune_and_save(
    engine: Engine,
    sae_key: str,
    cfg: KLFinetuneConfig,
    out: str | Path,
    max_minutes: float | None = None,
    docs: list[str] | None = None,
) -> Path:
    """Fine-tune a local SAE folder's decoder on the training text (train_sae.training_texts: the
    held-out parts and the dev documents excluded) and save the result to ``out``: the source's
    cfg.json and card, folded weights in the source's dtype, and its training.json with this pass
    appended to ``kl_finetune`` (configuration, KL per step, seconds, CPU) and the total time updated."""
    from safetensors.torch import save_file

    from unlearn_core.core.devices import cpu_name

    loaded = engine.saes[sae_key]
    src = Path(loaded.source)
    if not (src / "sae_weights.safetensors").exists():
        raise ValueError(f"SAE {sae_key!r} is not a local folder ({loaded.source}); the fine-tune saves a copy of one")
    if Path(out).resolve() == src.resolve():
        raise ValueError(
            "the output folder must differ from the source (the checkpoint is keyed by the source's weights)"
        )
    digest = hashlib.sha256((src / "sae_weights.safetensors").read_bytes()).hexdigest()[:12]
    root = Path(engine.settings.cache_dir) / "sae_finetune" / f"{digest}-{cfg.run_key()}"
    if docs is None:
        docs = training_texts(engine.settings.data_dir)[0]
    from tqdm import tqdm

    bar = tqdm(desc="KL fine-tune of the decoder", unit="step")

    def progress(step: int, steps: int, kl: float) -> None:
        if bar.total is None:  # the total is known at the first step; a resumed run's ETA counts from there
            bar.reset(total=steps)
            bar.initial = bar.n = step - 1
        bar.update(step - bar.n)
        bar.set_postfix(kl=f"{kl:.4f}")

    try:
        report = kl_finetune(engine, sae_key, docs, cfg, root, max_minutes, progress)
    finally:
        bar.close()
    src_cfg = json.loads((src / "cfg.json").read_text())
    dtype = getattr(torch, src_cfg.get("metadata", {}).get("weights_dtype", "float32"))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.to(dtype).contiguous() for k, v in folded_state(loaded.sae).items()}, str(tmp / "sae_weights.safetensors")
    )
    src_cfg.setdefault("metadata", {})["decoder_kl_finetuned"] = True
    (tmp / "cfg.json").write_text(json.dumps(src_cfg, indent=2))
    training = json.loads((src / "training.json").read_text()) if (src / "training.json").exists() else {}
    passes = training.get("kl_finetune", [])  # one entry per pass: a further pass keeps the earlier ones
    training["kl_finetune"] = [*passes, {**report, "source_weights_sha256": digest, "cpu": cpu_name()}]
    training["total_seconds"] = round(training.get("total_seconds", 0.0) + report["seconds"], 1)
    (tmp / "training.json").write_text(json.dumps(training, indent=2))
    if (src / "CARD.md").exists():
        shutil.copy(src / "CARD.md", tmp / "CARD.md")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def folded_state(sae) -> dict[str, torch.Tensor]:
    """The fine-tuned SAE's state with unit-norm decoder rows (same reconstruction)."""
    return fold_decoder_norm({k: v.detach() for k, v in sae.state_dict().items()})
