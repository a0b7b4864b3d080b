"""Disk cache with atomic writes and corrupt-entry recovery.

Every cache file is written to a temporary file in the same folder and renamed into place, so
a crash never leaves a half-written entry. A file that cannot be read back is logged, removed
and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj).encode())


def read_json(path: Path) -> Any | None:
    """The cached object, or None when missing or corrupt (corrupt files are logged and removed)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        log.warning("corrupt cache entry %s (%s): removing and rebuilding", path, e)
        path.unlink(missing_ok=True)
        return None


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    hit = read_json(path)
    if hit is not None:
        return hit
    value = compute()
    atomic_write_json(path, value)
    return value


def cached_tensors(path: Path, compute: Callable[[], dict]) -> dict:
    """A dict of tensors in safetensors format (never pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save

    path = Path(path)
    if path.exists():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            log.warning("corrupt cache entry %s (%s): removing and rebuilding", path, e)
            path.unlink(missing_ok=True)
    value = compute()
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in value.items()}))
    return value


# ---------------------------------------------------------------- keys by content

CACHE_VERSION = 3  # bumped when what a key is computed from changes: entries under older keys never match


def entry_path(cache_dir: str | Path, kind: str, *parts: Any, suffix: str = ".json") -> Path:
    """The file of one cache entry: ``<cache_dir>/<kind>/<key>``, the key a digest of the cache
    version, the kind and ``parts``. Callers pass *content* (digests of texts, questions, weights),
    never a bare name or path: a name whose content changed must miss (``caches.toml`` lists each
    kind's parts)."""
    return Path(cache_dir) / kind / f"{key_of(kind, CACHE_VERSION, *parts)}{suffix}"


def digest_texts(texts: list[str]) -> str:
    """A digest of documents, in order (a corpus's content, whatever its name)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def digest_tensors(named: list[tuple[str, Any]], stride: int = 1) -> str:
    """A digest of named tensors' shapes, dtypes and values (every ``stride``-th value of each,
    flattened: a sample where the full bytes would cost too much)."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.reshape(-1)[::stride] if stride > 1 else t.reshape(-1)
        h.update(flat.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]
