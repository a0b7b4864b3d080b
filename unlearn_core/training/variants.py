"""Model variants: a trained weight delta (``rmu:<name>``, ``persist:<name>``) added to the shared
model for the duration of a block, the exact weights restored after.

Both training methods leave a run the same way (``<cache_dir>/<kind>/<name>/``: ``card.json`` with
the delta's sha256, ``delta.safetensors``), so every page, endpoint, sweep and attack that takes one
kind takes the other through this module alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path
from typing import Iterator

import torch

from unlearn_core.core import cache as C

KINDS = ("rmu", "persist")
NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
# the schemas' pattern of a variant (one place, so no endpoint forgets a kind)
VARIANT_PATTERN = rf"^(base|({'|'.join(KINDS)}):{NAME_PATTERN})$"
LABELS = {"rmu": "RMU", "persist": "persistent SAE-guided"}


class VariantError(ValueError):
    """An unknown, unfinished, damaged or unfitting variant; the message says which."""


def parse(variant: str) -> tuple[str, str]:
    """('rmu' | 'persist', name) of 'kind:name'."""
    kind, sep, name = (variant or "").partition(":")
    if not sep or kind not in KINDS:
        raise VariantError(f"model variant {variant!r}: use 'base', 'rmu:<name>' or 'persist:<name>'")
    if not NAME_RE.match(name):
        raise VariantError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return kind, name


def is_variant(name: str) -> bool:
    return any(name.startswith(k + ":") for k in KINDS)


def run_dir(cache_dir: str | Path, kind: str, name: str) -> Path:
    if kind not in KINDS:
        raise VariantError(f"unknown kind of run {kind!r}; one of {KINDS}")
    if not NAME_RE.match(name or ""):
        raise VariantError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return Path(cache_dir) / kind / name


def list_runs(cache_dir: str | Path, kind: str) -> list[dict]:
    """Every run of ``kind`` under the cache directory: finished ones (their card) and unfinished ones."""
    root = Path(cache_dir) / kind
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        card = C.read_json(d / "card.json")
        spec = C.read_json(d / "spec.json")
        if card is not None:
            out.append({**{k: v for k, v in card.items() if k != "history"}, "status": "done"})
        elif spec is not None:
            st = C.read_json(d / "status.json") or {}
            out.append({**spec, "status": st.get("status", "unfinished")})
    return out


def finished(cache_dir: str | Path) -> list[str]:
    """Every finished run's variant name, all kinds."""
    return [f"{k}:{r['name']}" for k in KINDS for r in list_runs(cache_dir, k) if r["status"] == "done"]


_LOADED: dict[str, tuple] = {}  # path -> (file stamp, delta): a variant is applied per lock hold in the server


def load(cache_dir: str | Path, variant: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The saved delta of a finished run and its card; clear errors for unknown or unfinished runs."""
    from safetensors.torch import load as st_load

    kind, name = parse(variant)
    label = LABELS[kind]
    folder = run_dir(cache_dir, kind, name)
    card = C.read_json(folder / "card.json")
    if card is None:
        what = "unfinished (train it to the end, or resume it)" if (folder / "spec.json").exists() else "not found"
        raise VariantError(f"{label} run {name!r} is {what} under {folder.parent}")
    path = folder / "delta.safetensors"
    try:
        st = path.stat()
    except OSError as e:
        raise VariantError(f"{label} run {name!r}: its delta.safetensors is missing ({e})") from e
    stamp = (str(path), st.st_mtime_ns, st.st_size, card["delta_sha256"])
    hit = _LOADED.get(stamp[0])
    if hit is not None and hit[0] == stamp:
        return hit[1], card
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != card["delta_sha256"]:
        raise VariantError(f"{label} run {name!r}: delta.safetensors does not match its card (damaged or replaced)")
    delta = st_load(blob)
    _LOADED[stamp[0]] = (stamp, delta)
    return delta, card


def check(engine, variants: list[str]) -> None:
    """Every variant is a finished run of the loaded model ('base' passes): a clear error now, not a failed job."""
    for v in variants:
        if v in ("", "base"):
            continue
        _, card = load(engine.settings.cache_dir, v)
        if card["model"] != engine.model_name:
            raise VariantError(f"{v} was trained on {card['model']!r}, not on the loaded {engine.model_name!r}")


@contextlib.contextmanager
def applied(engine, variant: str | None) -> Iterator[object]:
    """The engine with ``variant``'s delta added to its weights for the block (None, '' or 'base':
    the model as it is); the exact previous weights are restored after, and the engine's cache
    namespace names the variant meanwhile, so no cache mixes the two."""
    if not variant or variant == "base":
        yield engine
        return
    kind, name = parse(variant)
    delta, card = load(engine.settings.cache_dir, variant)
    tag = f"{kind}:{name}@{card['delta_sha256'][:12]}"
    if engine.variant == tag:
        yield engine
        return
    if engine.variant:
        raise VariantError(f"model variant {engine.variant!r} is already applied; variants do not stack")
    if card["model"] != engine.model_name:
        raise VariantError(
            f"{LABELS[kind]} run {name!r} was trained on {card['model']!r}, not on the loaded {engine.model_name!r}"
        )
    params = dict(engine.model.named_parameters())
    bad = [k for k, v in delta.items() if k not in params or params[k].shape != v.shape]
    if bad:
        raise VariantError(f"{LABELS[kind]} run {name!r} does not fit this model's weights: {bad[:3]}")
    with delta_added(engine.model, delta):
        engine.variant = tag
        try:
            yield engine
        finally:
            engine.variant = ""


@contextlib.contextmanager
def delta_added(model, delta: dict[str, torch.Tensor]) -> Iterator[None]:
    """``delta`` added to the model's weights in place for the block, the exact previous weights
    copied back after (a variant's delta; ``attacks.relearn``'s trained one, scored with the code
    path every score goes through)."""
    params = dict(model.named_parameters())
    saved = {k: params[k].detach().clone() for k in delta}
    with torch.no_grad():
        for k, v in delta.items():
            params[k].add_(v.detach().to(params[k]))
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)


def finish_run(folder: Path, spec: dict, state, kind: str) -> dict:
    """A run's end, for every training method: its delta written, then its card (the spec, steps,
    seconds, loss curve, the delta's sha256 and norms, the machine), then the checkpoint dropped.
    ``state`` is a ``rmu.TrainState``."""
    import time

    from unlearn_core.core.devices import cpu_name

    tensors, sha = save_delta(folder, state.delta, kind)
    card = {
        **spec,
        "steps_done": state.step,
        "seconds": round(state.seconds, 2),
        "history": state.history,
        "delta_sha256": sha,
        "finished": time.time(),
        "delta_norms": {k: float(v.norm()) for k, v in tensors.items()},
        "cpu": cpu_name(),
        "torch": torch.__version__,
    }
    C.atomic_write_json(folder / "card.json", card)
    (folder / "checkpoint.safetensors").unlink(missing_ok=True)
    return card


def save_delta(folder: Path, delta: dict[str, torch.Tensor], kind: str) -> tuple[dict, str]:
    """Write ``delta.safetensors`` atomically; the tensors written and their sha256 (for the card)."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in delta.items()}
    blob = save(tensors, metadata={"format": "pt", "kind": f"{kind}-delta"})
    C.atomic_write_bytes(folder / "delta.safetensors", blob)
    return tensors, hashlib.sha256(blob).hexdigest()
