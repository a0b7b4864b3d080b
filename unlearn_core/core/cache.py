"""Disk cache with atomic writes and corrupt-entry recovery, and entries shipped with the package.

Every cache file is written to a temporary file in the same folder and renamed into place, so
a crash never leaves a half-written entry. A file that cannot be read back is logged, removed
and recomputed.

Shipped entries (``SHIPPED_DIR/<kind>/<file>``, for the kinds in ``SHIPPED_KINDS``) are what the
embedded model computes for the built-in targets' questions (``scripts/ship_cache.py``): the known
filters, the question-based feature scores and a gated default's calibration, as the SAE ships
its statistics. A shipped file has the name of the entry it stands for, a digest of everything it
is computed from (model and SAE identity, the questions' or corpus's content, scoring,
strictness, features), so it is read only where all of them match, and never for another model.
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


def read_rows(path: Path, key: Callable[[dict], Any], what: str) -> list[dict]:
    """The valid JSON lines of an append-only results file, the first row of each ``key``. A torn
    last line (a process killed mid-write), junk or a repeated key is dropped and the file
    rewritten without it (atomically), so the next append starts on a clean line. ``what`` names
    the file's owner in the warning."""
    if not path.exists():
        return []
    rows, seen, bad = [], set(), False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            k = key(row)
        except (json.JSONDecodeError, KeyError, TypeError):
            bad = bad or bool(line.strip())
            continue
        if k in seen:
            bad = True
            continue
        seen.add(k)
        rows.append(row)
    if bad or (path.stat().st_size and not path.read_bytes().endswith(b"\n")):
        log.warning("%s: dropping a torn or duplicate line in %s", what, path.name)
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


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


SHIPPED_KINDS = ("known", "feature_scores", "gate")


def shipped_dir() -> Path:
    from unlearn_core.core.paths import ASSETS

    return ASSETS / "embedded_sae" / "cache"


def shipped_entry(path: Path) -> Path | None:
    """The shipped file standing for the cache entry ``path`` (``<cache>/<kind>/<key>``), if any."""
    path = Path(path)
    kind = path.parent.name
    if kind not in SHIPPED_KINDS:
        return None
    shipped = shipped_dir() / kind / path.name
    return shipped if shipped.is_file() else None


def is_cached(path: Path) -> bool:
    """Whether reading the entry ``path`` needs no computing: on disk, or shipped."""
    return Path(path).exists() or shipped_entry(path) is not None


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    hit = read_json(path)
    if hit is not None:
        return hit
    shipped = shipped_entry(path)
    if shipped is not None and (value := read_json_shipped(shipped)) is not None:
        return value
    value = compute()
    atomic_write_json(path, value)
    return value


def read_json_shipped(path: Path) -> Any | None:
    """A shipped JSON entry, or None (logged) when it cannot be read; never removed."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        log.warning("unreadable shipped cache entry %s (%s): computing instead", path, e)
        return None


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
    shipped = shipped_entry(path)
    if shipped is not None:
        try:
            return load_file(str(shipped))
        except (SafetensorError, OSError, ValueError) as e:  # never removed: it is the package's
            log.warning("unreadable shipped cache entry %s (%s): computing instead", shipped, e)
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
