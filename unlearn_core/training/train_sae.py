"""Train the embedded SAE with SAELens, for quality per CPU-hour.

The residual activations at the hook are computed once and cached on disk in half precision
(``activation_cache``); SAELens's ``SAETrainer`` then trains a BatchTopK SAE for several epochs
over them, fed by a data provider that shuffles each epoch with a seeded permutation. Dead
latents get SAELens's remedies for TopK: the auxiliary-k loss on latents that have not fired for
``dead_feature_window`` steps. Training runs in pieces (``max_minutes``): a checkpoint (weights,
optimizer, scheduler, scaler, dead-latent counters and the data position) is written every
``checkpoint_every`` steps and at the end of a piece, and the same command resumes it.

The result is saved by SAELens as a JumpReLU inference SAE (the Gemma Scope architecture), at a
residual hook where Gemma Scope 2 also has one (layers 5, 9, 12, 15 of Gemma 3 270M), so users
with internet can swap in the official SAE at the same hook.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from unlearn_core.core.cache import atomic_write_json, read_json
from unlearn_core.core.paths import REPO_ROOT
from unlearn_core.data import loaders as D
from unlearn_core.model.saes import EMBEDDED_SAE_DIR
from unlearn_core.training import activation_cache as AC
from unlearn_core.training import checkpoints as CK

GEMMA_SCOPE_2_LAYERS = (5, 9, 12, 15)


class PieceDone(Exception):
    """The piece's time is up: a checkpoint was written; run the same command again to go on."""


@dataclass(frozen=True)
class TrainSAEConfig:
    layer: int = 5
    d_sae: int = 8192
    k: int = 48
    n_tokens: int = 2_500_000  # text tokens whose activations are cached (the training set)
    epochs: float = 2.0
    batch_size: int = 4096
    lr: float = 3e-4
    lr_warm_up_steps: int = 100
    lr_decay_fraction: float = 0.2  # linear decay to 0 over the last part of training
    aux_loss_coefficient: float = 1.0  # the auxiliary-k loss on dead latents (SAELens's TopK remedy; its default)
    dead_feature_window: int = 250  # steps without firing after which a latent counts as dead
    ctx: int = 128
    # the defaults are the shipped SAE's configuration (its training.json), so a bare train-sae rebuilds it.
    # the input scaling SAELens applies while training (folded into the saved weights): a scale to a
    # fixed mean norm, or PCA whitening, which keeps the two massive residual dimensions of Gemma 3
    # (most of the variance at layer 5) from dominating the reconstruction loss
    normalize: str = "covariance_whitening"
    dev_fraction: float = 0.02  # documents held back from training, for choosing the settings
    cache_dtype: str = "float16"
    save_dtype: str = "float16"  # the shipped weights; loading upcasts to the engine's dtype
    checkpoint_every: int = 200
    seed: int = 42
    out_dir: str = str(EMBEDDED_SAE_DIR)

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    def check(self, n_layers: int | None = None) -> None:
        if n_layers is not None and not 0 <= self.layer < n_layers:
            raise ValueError(f"layer {self.layer} is not a layer of this model (0..{n_layers - 1})")
        if not 0 < self.k < self.d_sae:
            raise ValueError(f"k = {self.k} must be between 0 and d_sae = {self.d_sae}")
        if self.lr <= 0 or self.epochs <= 0 or self.batch_size < 1:
            raise ValueError("lr, epochs and batch_size must be positive")
        if not 0 <= self.dev_fraction < 0.5:
            raise ValueError("dev_fraction must be in [0, 0.5)")
        if self.save_dtype not in ("float16", "float32"):
            raise ValueError("save_dtype must be float16 or float32")
        if self.normalize not in ("expected_average_only_in", "covariance_whitening"):
            raise ValueError("normalize must be expected_average_only_in or covariance_whitening")

    def cache_spec(self) -> AC.CacheSpec:
        return AC.CacheSpec(hook_name=self.hook_name, n_tokens=self.n_tokens, ctx=self.ctx, dtype=self.cache_dtype)

    def run_key(self) -> str:
        """What a checkpoint belongs to: every setting that changes the trained weights."""
        d = asdict(self)
        for k in ("out_dir", "checkpoint_every", "save_dtype"):
            d.pop(k)
        return json.dumps(d, sort_keys=True)


def training_texts(
    data_dir: str | None = None, seed: int = 42, dev_fraction: float = 0.02
) -> tuple[list[str], list[str], dict[str, int]]:
    """All local text except the held-out parts, shuffled: (train docs, dev docs, per-source count).
    The dev docs are held back from training to choose settings on; the card's numbers come from
    the held-out parts, which neither sees."""
    sources: dict[str, list[str]] = {
        "webtext (valid split)": D.load_corpus("webtext-train", data_dir),
        "pile (valid split)": D.load_corpus("pile-train", data_dir),
        "wikitext-2 (first 80%)": D.load_corpus("wikitext", data_dir, part="train"),
        "sherlock holmes (first 80%)": D.load_corpus("sherlock", data_dir, part="train"),
    }
    wmdp = D.load_wmdp_bio(data_dir, allow_fallback=False).questions
    sources["wmdp-bio question text (first 80%)"] = [D.question_text(q) for q in wmdp[: int(len(wmdp) * 0.8)]]
    subjects = [s for s in D.mmlu_subjects(data_dir) if s not in D.SIDE_EFFECT_SUBJECTS]
    sources["mmlu question text (53 subjects, side-effect subjects excluded)"] = [
        D.question_text(q) for q in D.load_mmlu(subjects, data_dir=data_dir).questions
    ]
    docs = [d for texts in sources.values() for d in texts]
    random.Random(seed).shuffle(docs)
    n_dev = int(len(docs) * dev_fraction)
    return docs[n_dev:], docs[:n_dev], {k: len(v) for k, v in sources.items()}


def epoch_batches(acts: torch.Tensor, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Batches of float32 activations, each epoch in its own seeded order (the last partial
    batch of an epoch dropped), from global step ``start_step`` on: a resumed run sees exactly
    the batches an uninterrupted one would."""
    per_epoch = acts.shape[0] // batch_size
    if per_epoch < 1:
        raise ValueError(f"{acts.shape[0]} activations are fewer than one batch of {batch_size}")
    step = start_step
    while True:
        epoch, first = divmod(step, per_epoch)
        perm = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for b in range(first, per_epoch):
            yield acts[perm[b * batch_size : (b + 1) * batch_size]].float()
            step += 1


def _make_sae(cfg: TrainSAEConfig, d_in: int):
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    torch.manual_seed(cfg.seed)
    sae_cfg = BatchTopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=cfg.d_sae,
        k=cfg.k,
        normalize_activations=cfg.normalize,
        aux_loss_coefficient=cfg.aux_loss_coefficient,
        device="cpu",
    )
    return BatchTopKTrainingSAE(sae_cfg)


def _trainer(cfg: TrainSAEConfig, sae, provider: Iterator[torch.Tensor], total_steps: int):
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    decay = int(total_steps * cfg.lr_decay_fraction)
    tcfg = SAETrainerConfig(
        total_training_samples=total_steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=decay,
        device="cpu",
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 100),
        logger=LoggingConfig(log_to_wandb=False),
    )
    return SAETrainer(tcfg, sae, provider)


def total_steps(cfg: TrainSAEConfig, n_acts: int) -> int:
    return max(1, math.floor(cfg.epochs * (n_acts // cfg.batch_size)))


def _save_checkpoint(trainer, root: Path, cfg: TrainSAEConfig, seconds: float) -> None:
    """SAELens's checkpoint (weights, optimizer, scheduler, scaler, counters) written beside the
    previous one, then swapped in (``checkpoints.swap_in``): a kill at any moment leaves one whole checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint("next", base_path=root)
    CK.write_run_meta(
        root / "next", {"run_key": cfg.run_key(), "step": trainer.n_training_steps, "train_seconds": seconds}
    )
    CK.swap_in(root)


def train(
    cfg: TrainSAEConfig,
    acts: torch.Tensor,
    checkpoint_dir: str | Path,
    max_minutes: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[object, dict]:
    """Train (or resume) the SAE on cached activations. Returns (the SAE, with the activation
    scaling folded in; a report) when training is complete; raises ``PieceDone`` after a
    checkpoint when ``max_minutes`` runs out first."""
    root = Path(checkpoint_dir)
    sae = _make_sae(cfg, acts.shape[1])
    steps = total_steps(cfg, acts.shape[0])
    start, spent = 0, 0.0
    latest = root / "latest"
    if latest.exists():
        run = CK.read_run_meta(latest)
        if run["run_key"] != cfg.run_key():
            raise ValueError(f"{root} holds a checkpoint of other settings; delete it or choose another folder")
        sae.load_weights_from_checkpoint(latest)
        start, spent = run["step"], run["train_seconds"]
    deadline = time.time() + max_minutes * 60 if max_minutes else None
    t0 = time.time()
    state: dict = {}

    def provider() -> Iterator[torch.Tensor]:
        for i, batch in enumerate(epoch_batches(acts, cfg.batch_size, cfg.seed, start)):
            step = start + i
            trainer = state["trainer"]
            if i and (step % cfg.checkpoint_every == 0 or (deadline and time.time() > deadline)):
                _save_checkpoint(trainer, root, cfg, spent + time.time() - t0)
                if deadline and time.time() > deadline:
                    raise PieceDone(f"stopped at step {step} of {steps}; run again to resume")
            if progress:
                progress(step, steps)
            yield batch

    trainer = state["trainer"] = _trainer(cfg, sae, provider(), steps)
    if latest.exists():
        trainer.load_trainer_state(latest)
    else:  # the scaling estimated from its own batches, so the training order does not depend on it
        own = epoch_batches(acts, cfg.batch_size, cfg.seed + 1)
        if cfg.normalize == "covariance_whitening":
            trainer.activation_scaler.estimate_whitening(acts.shape[1], own, 50)
        else:
            trainer.activation_scaler.estimate_scaling_factor(acts.shape[1], own, 20)
    sae = trainer.fit()
    dead = int(trainer.dead_neurons.sum())
    report = {
        "steps": steps,
        "train_seconds": round(spent + time.time() - t0, 1),
        "n_activations": int(acts.shape[0]),
        "epochs": cfg.epochs,
        "dead_at_end_of_training": dead,
        "l0_last_window": sae.cfg.metadata.l0,
    }
    return sae, report


def fold_decoder_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A JumpReLU state dict with unit-norm decoder rows and the same reconstruction: feature i's
    pre-activation and threshold are multiplied by ||W_dec[i]||. Why: a clamp value c then means
    the same thing for every feature and every SAE (a step of c along a unit direction of the
    residual), as with Gemma Scope's SAEs; whitened training leaves rows of norm 9 to 190."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d_in, d_sae = state["W_enc"].shape
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu"))
    sae.load_state_dict({k: v.float() for k, v in state.items()})
    sae.fold_W_dec_norm()  # SAELens's own fold: W_enc, b_enc and the threshold scaled by the norms
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def save(sae, cfg: TrainSAEConfig, out: str | Path, training: dict) -> Path:
    """The inference SAE (JumpReLU) in ``out``, written to a temporary folder and swapped in;
    weights in ``cfg.save_dtype`` (the config says float32: loading upcasts)."""
    from safetensors.torch import load_file, save_file

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sae.save_inference_model(str(tmp))
    weights = tmp / "sae_weights.safetensors"
    dt = getattr(torch, cfg.save_dtype)
    state = fold_decoder_norm(load_file(str(weights)))
    save_file({k: v.to(dt).contiguous() for k, v in state.items()}, str(weights))
    c = json.loads((tmp / "cfg.json").read_text())
    c["dtype"] = "float32"
    c.setdefault("metadata", {}).update(
        {"model_name": "embedded:gemma-3-270m", "hook_name": cfg.hook_name, "weights_dtype": cfg.save_dtype}
    )
    (tmp / "cfg.json").write_text(json.dumps(c, indent=2))
    (tmp / "training.json").write_text(json.dumps(training, indent=2))
    for extra in ("CARD.md",):  # the card is kept; its numbers are re-measured with sae-eval
        if (out / extra).exists():
            shutil.copy(out / extra, tmp / extra)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def train_embedded_sae(
    cfg: TrainSAEConfig,
    cache_dir: str = "cache",
    data_dir: str | None = None,
    max_minutes: float | None = None,
    engine=None,
    texts=None,
) -> Path:
    """Cache the activations (once), train in pieces, save to ``cfg.out_dir`` with training.json
    (configuration, data, seconds per phase, CPU). ``engine``/``texts`` replace the embedded model
    and the local text (the tiny backend's tests)."""
    from tqdm import tqdm

    from unlearn_core.core.devices import cpu_name

    cfg.check()
    if engine is None:
        from unlearn_core.core.settings import load_settings
        from unlearn_core.model.engine import load_engine

        engine = load_engine(load_settings({"cache_dir": cache_dir, "data_dir": data_dir}))
    cfg.check(engine.model.cfg.n_layers)
    train_docs, dev_docs, counts = texts if texts is not None else training_texts(data_dir, cfg.seed, cfg.dev_fraction)
    work = Path(cache_dir) / "sae_training" / f"layer{cfg.layer}-{AC.texts_digest(train_docs)}"
    spec = cfg.cache_spec()
    t0 = time.time()
    have = AC._manifest(work / "acts")
    if not (have and have.get("complete")):
        bar = tqdm(total=spec.n_tokens, desc=f"caching {cfg.hook_name} activations", unit="tok", unit_scale=True)
        AC.build(engine, train_docs, work / "acts", spec, progress=bar.update)
        bar.close()
    times = read_json(work / "times.json") or {}
    # the manifest sums every shard's time over all pieces (a cache from before it did: this piece's)
    m = AC._manifest(work / "acts")
    times["cache_seconds"] = (
        m["seconds"] if "seconds" in m else round(times.get("cache_seconds", 0.0) + time.time() - t0, 1)
    )
    atomic_write_json(work / "times.json", times)
    acts = AC.load(work / "acts")
    norm = "-white" if cfg.normalize == "covariance_whitening" else ""
    run_dir = work / "runs" / f"d{cfg.d_sae}-k{cfg.k}-lr{cfg.lr:g}-e{cfg.epochs:g}-s{cfg.seed}{norm}"
    bar = tqdm(total=total_steps(cfg, acts.shape[0]), desc="training the SAE", unit="step")

    first = []

    def progress(step: int, steps: int) -> None:
        if not first:  # a resumed piece starts its count (and its ETA's rate) at its first step
            first.append(step)
            bar.initial = bar.n = step
        bar.update(step - bar.n)

    try:
        sae, report = train(cfg, acts, run_dir, max_minutes, progress)
    finally:
        bar.close()
    training = {
        "config": {**asdict(cfg), "out_dir": _relative(Path(cfg.out_dir))},
        "hook_name": cfg.hook_name,
        "sources_documents": counts,
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs),
        "activation_cache": {
            "dtype": spec.dtype,
            "ctx": spec.ctx,
            "n_activations": int(acts.shape[0]),
            "seconds": times["cache_seconds"],
        },
        **report,
        "total_seconds": round(times["cache_seconds"] + report["train_seconds"], 1),
        "cpu": cpu_name(),
        "sae_lens_version": __import__("sae_lens").__version__,
    }
    return save(sae, cfg, cfg.out_dir, training)


def with_overrides(cfg: TrainSAEConfig, **kw) -> TrainSAEConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
