"""Residual activations at one hook point, computed once and kept on disk in half precision, so
an SAE trains for several epochs over them without running the model again (on a CPU the
forward pass is the expensive part of SAE training).

The cache is a folder of shards (``shard_00000.safetensors``: ``acts`` [n, d_model]) and a
``manifest.json``. Shards are written atomically, one at a time, so a killed build resumes at
the first missing shard. Only counted positions are kept: not BOS, EOS or padding (BOS
separates documents inside a window and has a huge norm that would dominate the loss)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from unlearn_core.core.cache import atomic_write_json
from unlearn_core.features.stats import counted_mask, layer_of_hook
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import corpus_windows, pad_right

MANIFEST = "manifest.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class ActivationCacheError(ValueError):
    """A cache that cannot be built or read (overflow, a damaged or foreign manifest)."""


@dataclass(frozen=True)
class CacheSpec:
    hook_name: str
    n_tokens: int = 3_000_000  # predicted tokens of text (the counted ones are slightly fewer)
    ctx: int = 128
    windows_per_shard: int = 1024  # ~127k tokens, ~160 MB at d_model 640 in float16
    batch_size: int = 16
    dtype: str = "float16"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ActivationCacheError(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if min(self.n_tokens, self.ctx - 1, self.windows_per_shard, self.batch_size) < 1:
            raise ActivationCacheError("n_tokens, ctx > 1, windows_per_shard and batch_size must be positive")


def texts_digest(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode()).digest())
    return h.hexdigest()[:16]


def _manifest(out: Path) -> dict | None:
    p = out / MANIFEST
    return json.loads(p.read_text()) if p.exists() else None


@torch.inference_mode()
def build(
    engine: Engine, docs: list[str], out: str | Path, spec: CacheSpec, progress: Callable[[int], None] | None = None
) -> dict:
    """Cache ``spec.hook_name``'s activations over ``docs`` under ``out`` (resumes a partial
    build of the same texts and spec; refuses another's). Returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = engine.model
    digest = texts_digest(docs)
    want = {"spec": asdict(spec), "texts": digest, "model": engine.cache_namespace(), "d_model": model.cfg.d_model}
    old = _manifest(out)
    if old is not None and {k: old.get(k) for k in want} != want:
        raise ActivationCacheError(f"{out} holds a cache of other texts or settings; choose another folder")
    windows = corpus_windows(model, docs, spec.n_tokens, spec.ctx)
    shards = [windows[s : s + spec.windows_per_shard] for s in range(0, len(windows), spec.windows_per_shard)]
    manifest = old or {**want, "n_windows": len(windows), "shards": {}, "complete": False}
    stop = layer_of_hook(spec.hook_name)
    dtype = DTYPES[spec.dtype]
    for i, shard in enumerate(shards):
        name = f"shard_{i:05d}.safetensors"
        if name in manifest["shards"] and (out / name).exists():
            if progress:
                progress(sum(len(w) - 1 for w in shard))
            continue
        t0 = time.time()
        parts = []
        for s in range(0, len(shard), spec.batch_size):
            toks, lens = pad_right(shard[s : s + spec.batch_size], 0)
            got = {}
            with model.hooks(fwd_hooks=[(spec.hook_name, lambda x, hook, got=got: got.__setitem__("x", x))]):
                model(toks.to(model.cfg.device), stop_at_layer=stop)
            x = got["x"][counted_mask(engine, toks, lens).to(got["x"].device)].float().cpu()
            if progress:
                progress(int(lens.sum()) - len(lens))
            parts.append(x)
        acts = torch.cat(parts)
        if not torch.isfinite(acts.to(dtype)).all():
            raise ActivationCacheError(
                f"activations overflow {spec.dtype} (max |x| {float(acts.abs().max()):.3g}); use bfloat16 or float32"
            )
        tmp = out / (name + ".tmp")
        save_file({"acts": acts.to(dtype).contiguous()}, str(tmp))
        tmp.replace(out / name)
        manifest["shards"][name] = int(acts.shape[0])
        # the time of every piece, kept with the shards: a killed build's finished shards still count
        manifest["seconds"] = round(manifest.get("seconds", 0.0) + time.time() - t0, 3)
        atomic_write_json(out / MANIFEST, manifest)
    manifest["complete"] = True
    manifest["n_acts"] = sum(manifest["shards"].values())
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def load(out: str | Path) -> torch.Tensor:
    """Every cached activation, in shard order, in the cache's half precision ([n, d_model])."""
    out = Path(out)
    m = _manifest(out)
    if m is None or not m.get("complete"):
        raise ActivationCacheError(f"{out} holds no complete activation cache (build it first)")
    parts = [load_file(str(out / name))["acts"] for name in sorted(m["shards"])]
    acts = torch.cat(parts)
    if acts.shape != (m["n_acts"], m["d_model"]):
        raise ActivationCacheError(
            f"{out}: {tuple(acts.shape)} activations, the manifest says ({m['n_acts']}, {m['d_model']})"
        )
    return acts
