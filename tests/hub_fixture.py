"""A Hugging Face hub cache and hub-shaped dataset copies, built at test time (never committed).

What a GPU user with internet downloads, laid out here so that the *same* code reads it with
``HF_HUB_OFFLINE=1``:

* ``models--google--gemma-3-270m``: the embedded Gemma 3 270M's real weights (the project's
  converted copy), config and tokenizer, as ``huggingface_hub`` caches a model repo: ``blobs/``
  named by their etag (git-sha1 for small files, sha256 for LFS ones), ``snapshots/<commit>/``
  of relative symlinks, ``refs/main``;
* ``models--google--gemma-scope-2-270m-pt``: the Gemma Scope 2 release SAELens lists as
  ``gemma-scope-2-270m-pt-res``; ``resid_post/layer_5_width_16k_l0_medium`` with random JumpReLU
  weights of the official shapes (w_enc [640, 16384], ...) under the official tensor names, and a
  ``config.json`` with the fields SAELens's ``gemma_3`` loader reads;
* ``cais/wmdp`` and ``cais/mmlu`` as the hub serves those dataset repos (a README with the
  configs, ``<config>/<split>-00000-of-00001.parquet`` with the hub's columns), filled from
  ``../shared/data``. ``datasets.load_dataset("cais/wmdp", ...)`` takes such a copy in the
  working directory without any code change.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MODEL_REPO = "google/gemma-3-270m"
SAE_REPO = "google/gemma-scope-2-270m-pt"
SAE_RELEASE = "gemma-scope-2-270m-pt-res"
SAE_ID = "layer_5_width_16k_l0_medium"
SAE_FOLDER = "resid_post/layer_5_width_16k_l0_medium"
SAE_SELECTOR = f"{SAE_RELEASE}:{SAE_ID}"
D_IN, D_SAE = 640, 16384
# the embedded model's residual norm at layer 5 is ~3500 (median over tokens, measured), so a
# random unit encoder column gives pre-activations ~ N(0, 138^2): a threshold of 400 (~2.9 sigma)
# makes about 0.2% of the features fire per token, near the release's L0 of 55 for 16k
THRESHOLD = 400.0
COMMIT_MODEL = "0" * 39 + "1"
COMMIT_SAE = "0" * 39 + "2"
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _add(repo_dir: Path, commit: str, rel: str, src: Path) -> None:
    """One file of a cached repo: the blob (a symlink to ``src`` for large files, so a 1 GB
    model is not copied) and the snapshot entry, a relative symlink to the blob, as
    huggingface_hub writes them."""
    lfs = src.stat().st_size > 10 * 2**20 or src.suffix == ".safetensors"
    etag = _sha256(src) if lfs else _git_sha1(src.read_bytes())
    blob = repo_dir / "blobs" / etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        if lfs:
            blob.symlink_to(src.resolve())
        else:
            blob.write_bytes(src.read_bytes())
    link = repo_dir / "snapshots" / commit / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)


def _repo_dir(hub: Path, repo_id: str, kind: str = "models") -> Path:
    return hub / f"{kind}--{repo_id.replace('/', '--')}"


def build_model_repo(hub: Path, converted: Path) -> None:
    repo = _repo_dir(hub, MODEL_REPO)
    for name in MODEL_FILES:
        _add(repo, COMMIT_MODEL, name, converted / name)


def build_sae_repo(hub: Path, work: Path, seed: int = 0) -> Path:
    """Random JumpReLU weights of the release's shapes; returns the params file."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(D_SAE, D_IN, generator=g)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    params = {
        "w_enc": w_dec.T.contiguous(),
        "w_dec": w_dec,
        "b_enc": torch.zeros(D_SAE),
        "b_dec": torch.zeros(D_IN),
        "threshold": torch.full((D_SAE,), THRESHOLD),
    }
    src = work / "sae_src"
    src.mkdir(parents=True, exist_ok=True)
    save_file(params, str(src / "params.safetensors"))
    # the fields SAELens's gemma_3 loader reads from the release's config.json (model_name in
    # the release's own spelling, which the loader maps to google/gemma-3-270m)
    (src / "config.json").write_text(
        json.dumps(
            {
                "architecture": "jump_relu",
                "model_name": "gemma-v3-270m-pt",
                "width": D_SAE,
                "l0": 55,
                "hf_hook_point_in": "model.layers.5.output",
                "type": "sae",
            },
            indent=1,
        )
    )
    repo = _repo_dir(hub, SAE_REPO)
    for name in ("params.safetensors", "config.json"):
        _add(repo, COMMIT_SAE, f"{SAE_FOLDER}/{name}", src / name)
    return src / "params.safetensors"


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def build_dataset_copies(cwd: Path, shared_data: Path, mmlu_subjects: tuple[str, ...]) -> None:
    """``cais/wmdp`` (wmdp-bio, test) and ``cais/mmlu`` (the subjects' dev and test splits) as
    the hub serves them, under ``cwd``."""
    import csv

    wmdp = json.loads((shared_data / "wmdp" / "bio_questions.json").read_text())
    _write_parquet(
        cwd / "cais/wmdp/wmdp-bio/test-00000-of-00001.parquet",
        [{"answer": int(r["answer"]), "question": r["question"], "choices": list(r["choices"])} for r in wmdp],
    )
    (cwd / "cais/wmdp/README.md").write_text(
        "---\nconfigs:\n- config_name: wmdp-bio\n  data_files:\n  - split: test\n    path: wmdp-bio/test-*\n---\n"
    )
    configs = []
    for subj in mmlu_subjects:
        files = []
        for split in ("dev", "test"):
            with open(shared_data / "mmlu" / split / f"{subj}_{split}.csv", newline="") as f:
                rows = [
                    {
                        "question": r["question"],
                        "subject": subj,
                        "choices": [r[f"choice{i}"] for i in range(4)],
                        "answer": int(r["answer"]),
                    }
                    for r in csv.DictReader(f)
                ]
            _write_parquet(cwd / f"cais/mmlu/{subj}/{split}-00000-of-00001.parquet", rows)
            files.append(f"  - split: {split}\n    path: {subj}/{split}-*\n")
        configs.append(f"- config_name: {subj}\n  data_files:\n" + "".join(files))
    (cwd / "cais/mmlu/README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")


def hub_env(hub: Path, datasets_cache: Path) -> dict[str, str]:
    """The environment a test runs the research path under: hub cache here, hub offline, and
    the project's own hub switch on (conftest turns it off for every other test)."""
    return {
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(datasets_cache),
        "TRANSFORMERS_OFFLINE": "1",
        "UNLEARN_NO_HUB": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
