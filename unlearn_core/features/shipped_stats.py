"""Feature statistics shipped with the embedded SAE (as SAELens releases ship sparsity).

A shipped entry is named exactly like the disk cache entry it stands for (``stats.stats_path``:
model identity, SAE fingerprint, corpus name and documents' digest, tokens, window, bins), so it
is used only when all of them match and recomputed otherwise. ``window_max`` [n_windows, d_sae]
(about a third nonzero) and ``hist`` are stored as a bitmap of their nonzero positions plus the
compressed values, and rebuilt exactly: about 40% of the dense size.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from unlearn_core.core import cache as C
from unlearn_core.core.paths import ASSETS

log = logging.getLogger(__name__)

SHIPPED_DIR = ASSETS / "embedded_sae" / "stats"  # read at call time: tests point it elsewhere
SPARSE = ("window_max", "hist")  # [rows, d_sae]-shaped, mostly zero
FORMAT = 2
DTYPE_NP = {torch.float16: np.float16, torch.float32: np.float32}


VALUE_DTYPES = (torch.float16, torch.float32)


def to_sparse(name: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """A 2-D float tensor as ``.bits`` (a packed bitmap of stored positions, row-major), ``.values``
    (those values' bytes, byte planes split and zlib-compressed: the high bytes of nearby maxima
    repeat), ``.dtype`` and ``.shape``. -0.0 and NaN are stored too, so the round trip is exact."""
    if t.dim() != 2 or t.dtype not in VALUE_DTYPES:
        raise ValueError(f"{name}: sparse storage takes a 2-D float16/float32 tensor, got {t.dtype} {tuple(t.shape)}")
    nz = (t != 0) | torch.signbit(t)
    vals = t[nz].contiguous().numpy()
    planes = vals.view(np.uint8).reshape(-1, vals.itemsize).T.tobytes()
    return {
        f"{name}.bits": torch.from_numpy(np.packbits(nz.numpy().reshape(-1))),
        f"{name}.values": torch.frombuffer(bytearray(zlib.compress(planes, 9)), dtype=torch.uint8),
        f"{name}.dtype": torch.tensor([VALUE_DTYPES.index(t.dtype)]),
        f"{name}.shape": torch.tensor(list(t.shape)),
    }


def from_sparse(name: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense tensor ``to_sparse`` stored, bit for bit (zeros where nothing was stored)."""
    rows, cols = (int(x) for x in parts[f"{name}.shape"])
    dtype = VALUE_DTYPES[int(parts[f"{name}.dtype"][0])]
    bits = parts[f"{name}.bits"].numpy()
    if bits.size != -(-rows * cols // 8):
        raise ValueError(f"{name}: inconsistent sparse parts (bitmap of {bits.size} bytes for {rows}x{cols})")
    nz = np.unpackbits(bits, count=rows * cols).astype(bool)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    want = int(nz.sum()) * itemsize
    raw = zlib.decompressobj().decompress(parts[f"{name}.values"].numpy().tobytes(), want + 1)  # bounded
    if len(raw) != want:
        raise ValueError(f"{name}: inconsistent sparse parts ({len(raw)} value bytes, {want} expected)")
    vals = np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.copy().view(DTYPE_NP[dtype]).reshape(-1)
    out = torch.zeros(rows * cols, dtype=dtype)
    out[torch.from_numpy(nz)] = torch.from_numpy(vals)
    return out.view(rows, cols)


def pack(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Statistics (``StatsAccumulator.result``) as the tensors a shipped file holds."""
    out = {k: v.contiguous() for k, v in t.items() if k not in SPARSE}
    for k in SPARSE:
        out.update(to_sparse(k, t[k]))
    out["format"] = torch.tensor([FORMAT])
    return out


def unpack(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if int(t["format"][0]) != FORMAT:
        raise ValueError(f"shipped statistics format {int(t['format'][0])}, expected {FORMAT}")
    out = {k: v for k, v in t.items() if "." not in k and k != "format"}
    for k in SPARSE:
        out[k] = from_sparse(k, t)
    return out


def shipped_path(entry: Path, shipped_dir: Path | None = None) -> Path:
    """Where the shipped copy of a cache entry would be: the same file name (its content key)."""
    return Path(shipped_dir or SHIPPED_DIR) / Path(entry).name


def load_shipped(entry: Path, shipped_dir: Path | None = None) -> dict[str, torch.Tensor] | None:
    """The shipped statistics under ``entry``'s key, or None when none ships (or it is unreadable)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = shipped_path(entry, shipped_dir)
    if not path.is_file():
        return None
    try:
        return unpack(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError, IndexError, zlib.error) as e:
        log.warning("unreadable shipped statistics %s (%s): computing them instead", path, e)
        return None


def write_shipped(entry: Path, t: dict[str, torch.Tensor], shipped_dir: Path | None = None) -> Path:
    """Store statistics as a shipped entry (the regeneration script's writer); atomic."""
    from safetensors.torch import save

    path = shipped_path(entry, shipped_dir)
    C.atomic_write_bytes(path, save(pack(t)))
    return path


def cached_stats(entry: Path, compute: Callable[[], dict]) -> dict:
    """``cache.cached_tensors`` for statistics, looking for a shipped entry under the same key
    before computing: a newcomer's first run reads the shipped numbers instead of running the model."""
    if not Path(entry).exists():
        hit = load_shipped(entry)
        if hit is not None:
            return hit
    return C.cached_tensors(entry, compute)
