"""Train the embedded SAE for the embedded model with SAELens's own training runner.

BatchTopK training, saved by SAELens as a JumpReLU inference SAE (the Gemma Scope
architecture), at a residual hook where Gemma Scope 2 also has one, so users with internet
can swap in the official SAE at the same hook and compare.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import data as D

EMBEDDED_SAE_DIR = Path(__file__).resolve().parent / "assets" / "embedded_sae"


@dataclass
class TrainSAEConfig:
    layer: int = 5
    d_sae: int = 4096
    k: int = 48
    training_tokens: int = 2_500_000
    context_size: int = 128
    train_batch_size_tokens: int = 1024
    lr: float = 4e-4
    seed: int = 42
    out_dir: str = str(EMBEDDED_SAE_DIR)

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


def training_texts(data_dir: str | None = None, seed: int = 42) -> tuple[list[str], dict[str, int]]:
    """All local text except held-out parts: documents shuffled, plus a per-source count."""
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
    return docs, {k: len(v) for k, v in sources.items()}


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def train_embedded_sae(cfg: TrainSAEConfig, cache_dir: str = "cache", data_dir: str | None = None) -> Path:
    import datasets
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
    )

    from .models import load_model

    model = load_model("embedded:gemma-3-270m", cache_dir=cache_dir)
    docs, counts = training_texts(data_dir, cfg.seed)
    ds = datasets.Dataset.from_dict({"text": docs})
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=BatchTopKTrainingSAEConfig(
            d_in=model.cfg.d_model, d_sae=cfg.d_sae, k=cfg.k, normalize_activations="expected_average_only_in",
        ),
        model_name="google/gemma-3-270m",
        hook_name=cfg.hook_name,
        dataset_path="local",
        is_dataset_tokenized=False,
        streaming=False,
        context_size=cfg.context_size,
        training_tokens=cfg.training_tokens,
        train_batch_size_tokens=cfg.train_batch_size_tokens,
        store_batch_size_prompts=16,
        n_batches_in_buffer=8,
        lr=cfg.lr,
        lr_warm_up_steps=100,
        lr_decay_steps=cfg.training_tokens // cfg.train_batch_size_tokens // 5,
        device="cpu",
        seed=cfg.seed,
        exclude_special_tokens=True,
        n_batches_for_norm_estimate=50,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=str(Path(cache_dir) / "sae_checkpoints"),
        output_path=None,
        n_eval_batches=2,
        verbose=True,
    )
    t0 = time.time()
    sae = LanguageModelSAETrainingRunner(runner_cfg, override_dataset=ds, override_model=model).run()
    elapsed = time.time() - t0
    out = Path(cfg.out_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    sae.save_inference_model(str(tmp))
    c = json.loads((tmp / "cfg.json").read_text())
    c.setdefault("metadata", {})
    c["metadata"].update({"model_name": "embedded:gemma-3-270m", "hook_name": cfg.hook_name})
    (tmp / "cfg.json").write_text(json.dumps(c, indent=2))
    (tmp / "training.json").write_text(json.dumps(
        {"config": {**asdict(cfg), "out_dir": _relative(out)}, "sources_documents": counts, "train_seconds": round(elapsed, 1),
         "sae_lens_version": __import__("sae_lens").__version__}, indent=2))
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
