"""Training checkpoints, one format for every trainer that owns its parameters and Adam state.

Why one module: the KL fine-tune and RMU each had their own writer with their own key names.
A checkpoint here is one safetensors file, written atomically through ``core.cache`` (a kill at
any moment leaves the previous whole file), holding

* ``param/<name>`` - the trained tensors,
* ``adam/exp_avg/<name>``, ``adam/exp_avg_sq/<name>`` - Adam's moments, where it has taken a step,
* metadata ``meta`` (the trainer's counters as JSON) and ``adam_step`` (Adam's step count).

SAE training keeps SAELens's own checkpoint folder (its trainer, scheduler and scaler state are
SAELens's to write); it is made crash-safe by writing beside the last one and swapping it in
(``swap_in``), with the same JSON counters in ``run.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from unlearn_core.core import cache as C

MOMENTS = ("exp_avg", "exp_avg_sq")


def save(path: str | Path, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer | None, meta: dict) -> None:
    """Write ``params``, their Adam moments in ``opt`` and ``meta`` (JSON-able) to ``path``."""
    from safetensors.torch import save as to_bytes

    tensors = {f"param/{k}": v.detach() for k, v in params.items()}
    adam_step = 0
    for k, v in params.items():
        st = opt.state.get(v, {}) if opt is not None else {}
        for name in MOMENTS:
            if name in st:
                tensors[f"adam/{name}/{k}"] = st[name]
        if "step" in st:
            adam_step = int(st["step"])
    metadata = {"meta": json.dumps(meta), "adam_step": str(adam_step)}
    C.atomic_write_bytes(Path(path), to_bytes({k: v.contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


def read_meta(path: str | Path) -> dict:
    """The counters a checkpoint was saved with (without reading its tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


def load(path: str | Path, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer | None) -> dict:
    """Copy a checkpoint's tensors into ``params`` (in place, on their device) and restore Adam's
    moments and step into ``opt``; returns its ``meta``. A missing parameter is an error: a
    checkpoint of other parameters must not half-load."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md, keys = f.metadata(), set(f.keys())
        missing = [k for k in params if f"param/{k}" not in keys]
        if missing:
            raise ValueError(f"{path} lacks parameters {missing[:5]}: a checkpoint of other settings")
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(f.get_tensor(f"param/{k}").to(v.device))
        adam_step = int(md.get("adam_step", 0))
        if opt is not None and adam_step:
            for k, v in params.items():
                if f"adam/exp_avg/{k}" in keys:
                    opt.state[v] = {
                        "step": torch.tensor(float(adam_step)),
                        **{n: f.get_tensor(f"adam/{n}/{k}").to(v.device) for n in MOMENTS},
                    }
        return json.loads(md["meta"])


def swap_in(root: Path) -> None:
    """``root/next`` becomes ``root/latest``; the old one is deleted only afterwards, so a kill at
    any moment leaves one whole checkpoint folder."""
    if (root / "latest").exists():
        (root / "latest").rename(root / "previous")
    (root / "next").rename(root / "latest")
    shutil.rmtree(root / "previous", ignore_errors=True)


def write_run_meta(folder: Path, meta: dict) -> None:
    C.atomic_write_json(Path(folder) / "run.json", meta)


def read_run_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "run.json").read_text())
