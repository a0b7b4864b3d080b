"""What the disk caches hold and how to drop them (``python -m unlearn_core cache info|clear``).

The kinds, their keys and their invalidation are data (``assets/caches.toml``), read once; this
module only measures folders and removes them.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from unlearn_core.core.paths import ASSETS

REGISTRY = ASSETS / "caches.toml"


@dataclass(frozen=True)
class CacheKind:
    name: str
    what: str
    key: str
    invalidation: str
    derived: bool  # recomputable; `cache clear` without --kind removes only these
    disk: bool = True  # False: a process's memory (listed in the audit; nothing to measure or clear)


def cache_kinds() -> dict[str, CacheKind]:
    raw = tomllib.loads(REGISTRY.read_text())
    return {
        name: CacheKind(name, d["what"], d["key"], d["invalidation"], bool(d["derived"]), bool(d.get("disk", True)))
        for name, d in raw.items()
    }


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def cache_info(cache_dir: str | Path) -> list[dict]:
    """One row per kind: its folder, entries (files), bytes, and what it is keyed by."""
    root = Path(cache_dir)
    rows = []
    for k in (k for k in cache_kinds().values() if k.disk):
        n, size = _size(root / k.name)
        rows.append(
            {
                "kind": k.name,
                "folder": str(root / k.name),
                "files": n,
                "bytes": size,
                "derived": k.derived,
                "what": k.what,
                "key": k.key,
                "invalidation": k.invalidation,
            }
        )
    return rows


def clear_cache(cache_dir: str | Path, kinds: list[str] | None = None) -> list[dict]:
    """Remove the named kinds' folders (all derived kinds when ``kinds`` is empty); returns what
    was removed. User results (RMU runs, jobs, saved targets) go only when named."""
    known = {k: v for k, v in cache_kinds().items() if v.disk}
    bad = [k for k in kinds or [] if k not in known]
    if bad:
        raise ValueError(f"unknown cache kind(s) {bad}; known: {', '.join(known)}")
    chosen = kinds or [k for k, v in known.items() if v.derived]
    out = []
    for name in chosen:
        folder = Path(cache_dir) / name
        n, size = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        out.append({"kind": name, "files": n, "bytes": size})
    return out


def audit_markdown() -> str:
    """The cache audit as a page (docs/research/caches.md is this text; a test keeps the two equal)."""
    from unlearn_core.core.cache import CACHE_VERSION

    def table(kinds: list[CacheKind]) -> list[str]:
        rows = ["| cache | holds | keyed by | invalidation |", "| --- | --- | --- | --- |"]
        return rows + [f"| `{k.name}` | {k.what} | {k.key} | {k.invalidation} |" for k in kinds]

    kinds = list(cache_kinds().values())
    lines = [
        "# Caches: what each is keyed by",
        "",
        "Generated from `unlearn_core/core/assets/caches.toml` by "
        "`python -m unlearn_core cache info --markdown > docs/research/caches.md`.",
        "",
        "Every result computed from a model, an SAE, questions or text is keyed by their *content*",
        "(digests of the weights, the question texts, the corpus documents), never by a name, a path",
        f"or ids alone. Keys include the cache version ({CACHE_VERSION}): entries written under older keys",
        "are never matched. `python -m unlearn_core cache info` shows each kind's size;",
        "`cache clear` removes the derived kinds, `cache clear --kind K` any one (user results such as",
        "RMU runs, sweep jobs and saved targets only when named).",
        "",
        "```bash",
        "python -m unlearn_core cache info              # each cache: files, size, what its key is computed from",
        "python -m unlearn_core cache clear             # every derived cache (user results stay)",
        "python -m unlearn_core cache clear --kind rmu  # one kind, user results included when named",
        "```",
        "",
        "The cache folder is `cache/` in the repository (`--cache-dir` or `UNLEARN_CACHE_DIR` to put it",
        "elsewhere); it is not committed. Entries are written atomically, and a corrupt one is logged and",
        "computed again.",
        "",
        "*Model identity* is `Engine.cache_identity()`: the model's name, dtype, the variant applied (an RMU",
        "delta's name and sha256) and a digest of its weights (every 997th value of every parameter, with",
        "names and shapes), recomputed when a parameter changes. *SAE fingerprint* is",
        "`features.sae_fingerprint()`: selector, hook, width and a sha256 of every SAE parameter.",
        "",
        "*Shipped entries.* The embedded SAE ships some entries so that a fresh clone's first demo,",
        "`target eval` and tests do not compute them from nothing: feature statistics of the built-in",
        "targets' corpora (`unlearn_core/core/assets/embedded_sae/stats/`, `python scripts/ship_stats.py`)",
        "and the built-in targets' known filters, question-based feature scores and gate calibrations",
        "(`unlearn_core/core/assets/embedded_sae/cache/`, `python scripts/ship_cache.py`). They are named",
        "by the same content keys, so they are read only when model, SAE and data all match; rerun the",
        "scripts after changing any of them.",
        "",
        "## On disk (under the cache folder)",
        "",
    ]
    lines += table([k for k in kinds if k.disk])
    lines += ["", "## In memory (one server or worker process)", ""]
    lines += table([k for k in kinds if not k.disk])
    return "\n".join(lines) + "\n"
