"""Which device and dtype a setting means: settings resolve them before anything loads, so a
device that cannot be had is a one-line error up front (torch is imported only when asked)."""

from __future__ import annotations

from pathlib import Path


def pick_device(device: str = "auto") -> str:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'; anything
    unavailable or unknown is a one-line ValueError that says what to use instead."""
    import re

    import torch

    advice = "use --device cpu or --device auto (or UNLEARN_DEVICE / `device` in the settings file)"
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m:
        if not torch.cuda.is_available():
            why = (
                "no GPU is visible" if torch.version.cuda else f"this torch ({torch.__version__}) is built without CUDA"
            )
            raise ValueError(f"device {device!r} requested but CUDA is not available ({why}); {advice}")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                f"are visible; use cuda:0..cuda:{torch.cuda.device_count() - 1} or --device auto"
            )
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device 'mps' requested but MPS is not available; {advice}")
        return device
    raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N, mps; {advice}")


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def cpu_name() -> str:
    """The CPU model (cards and benchmarks name the machine their figures come from)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
