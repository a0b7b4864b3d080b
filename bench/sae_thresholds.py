"""Would lower JumpReLU thresholds buy back loss? Scales every threshold of an SAE and measures
L0, explained variance and Δloss (spliced minus clean) on `sae-dev`, the documents train-sae holds
back for choosing settings (never on the held-out corpora the card reports).

    python bench/sae_thresholds.py [--sae-dir unlearn_core/core/assets/embedded_sae] [--scales 1,0.85,0.7,0.55]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import machine
from safetensors.torch import load_file, save_file

from unlearn_core.core.settings import load_settings
from unlearn_core.evaluation.sae_eval import loss_recovered, reconstruction_stats
from unlearn_core.model.engine import load_engine
from unlearn_core.model.saes import EMBEDDED_SAE_DIR
from unlearn_core.training.train_sae import TrainSAEConfig, training_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sae-dir", default=str(EMBEDDED_SAE_DIR))
    ap.add_argument("--scales", default="1,0.85,0.7,0.55")
    ap.add_argument("--tokens", type=int, default=20_000, help="tokens for L0 and explained variance")
    ap.add_argument("--loss-tokens", type=int, default=3_000)
    args = ap.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        state = load_file(str(Path(args.sae_dir) / "sae_weights.safetensors"))
        folders = []
        for s in scales:
            d = Path(tmp) / f"x{s:g}"
            shutil.copytree(args.sae_dir, d)
            save_file(
                {**state, "threshold": (state["threshold"].float() * s).to(state["threshold"].dtype)},
                str(d / "sae_weights.safetensors"),
            )
            folders.append(str(d))
        engine = load_engine(load_settings({"saes": folders}), progress=False)
        dev = training_texts(engine.settings.data_dir, TrainSAEConfig.seed, TrainSAEConfig.dev_fraction)[1]
        print(
            f"machine: {machine()}; SAE {args.sae_dir}; sae-dev, {args.tokens} tokens (L0, EV), "
            f"{args.loss_tokens} (Δloss)"
        )
        print("| threshold scale | L0 | explained variance | Δloss (nats) |\n| --- | --- | --- | --- |")
        for s, key in zip(scales, folders):
            rec = reconstruction_stats(engine, key, dev, n_tokens=args.tokens)
            lr = loss_recovered(engine, key, dev, n_tokens=args.loss_tokens)
            print(
                f"| {s:g} | {rec['l0']:.1f} | {rec['explained_variance']:.3f} | "
                f"{lr['spliced_loss'] - lr['clean_loss']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
