"""SAE feature interventions as TransformerLens hooks, exactly as in ``method.md``.

Modes (one per :class:`Intervention`):

* ``clamp``  clamp-when-active (the paper): where a selected feature is > 0 set it to ``-c``;
  the SAE error term is kept, so the output equals the input wherever no selected feature fires.
* ``zero``   the same with c = 0 (zero ablation; the paper found it ineffective).
* ``add``    a *different* method: add ``-c * W_dec[i]`` at every position, whether or not the
  feature fires (unconditional steering, as Neuronpedia's additive steering).
* ``reconstruct`` the Harry Potter study's hook: replace the residual by the SAE reconstruction
  with the selected features clamped (error term dropped). With no features this is the
  "SAE spliced in, nothing ablated" control that shows the SAE's own reconstruction damage.

BOS is never touched (the paper zeroes the codes at position 0). During KV-cached generation a
forward pass of a single token is a continuation, so its position 0 is *not* BOS and is
intervened like every other generated token.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .saes import LoadedSAE

MODES = ("clamp", "zero", "add", "reconstruct")
MODE_LABELS = {
    "clamp": "clamp when active to -c (paper)",
    "zero": "zero ablation (c = 0)",
    "add": "unconditional: add -c·W_dec everywhere (different method)",
    "reconstruct": "reconstruction only, error term dropped (Harry Potter study)",
}
MAX_ABS_CLAMP = 1e4


@dataclass(frozen=True)
class Intervention:
    sae_key: str
    features: tuple[int, ...]
    value: float = 20.0  # c: features are set to -c
    mode: str = "clamp"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not math.isfinite(self.value) or abs(self.value) > MAX_ABS_CLAMP:
            raise ValueError(f"clamp value must be finite and |c| <= {MAX_ABS_CLAMP}, got {self.value}")
        if self.mode != "reconstruct" and not self.features:
            raise ValueError(f"mode {self.mode!r} needs at least one feature")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if any(f < 0 for f in self.features):
            raise ValueError("feature ids must be >= 0")

    @property
    def c(self) -> float:
        return 0.0 if self.mode == "zero" else float(self.value)

    def label(self) -> str:
        return f"{self.mode} c={self.c:g} on {len(self.features)} feature(s) of {self.sae_key}"


@dataclass
class HookState:
    """Set by callers that know better than the heuristic (e.g. our own cached decoding)."""

    continuation: bool | None = None  # None: infer (seq_len == 1 means a KV-cached step)


def validate(interventions: list[Intervention], saes: dict[str, LoadedSAE]) -> None:
    for iv in interventions:
        if iv.sae_key not in saes:
            raise KeyError(f"unknown SAE {iv.sae_key!r}; loaded: {sorted(saes)}")
        d = saes[iv.sae_key].d_sae
        bad = [f for f in iv.features if f >= d]
        if bad:
            raise ValueError(f"feature ids {bad[:5]} out of range for SAE {iv.sae_key!r} (d_sae={d})")


def apply_to_resid(resid: torch.Tensor, sae, iv: Intervention, skip_first: bool) -> torch.Tensor:
    """The intervention on one activation tensor [batch, pos, d]; a pure function, easy to test."""
    feats = list(iv.features)
    dtype = resid.dtype
    x = resid.to(sae.W_enc.dtype)
    if iv.mode == "add":
        delta = -iv.c * sae.W_dec[feats].sum(0)
        out = x + delta
        if skip_first:
            out[:, 0] = x[:, 0]
        return out.to(dtype)
    f = sae.encode(x)
    if skip_first:
        f[:, 0, :] = 0.0
    recon = sae.decode(f)
    if feats:
        sel = f[..., feats]
        f[..., feats] = torch.where(sel > 0, torch.full_like(sel, -iv.c), sel)
    new_recon = sae.decode(f)
    # error + new_recon, with error = x - recon, written so that positions where nothing
    # changed come back bit-for-bit equal to the input (no float round-off through the SAE).
    out = new_recon if iv.mode == "reconstruct" else x + (new_recon - recon)
    if skip_first:
        out[:, 0] = x[:, 0]
    return out.to(dtype)


def make_hook(saes: dict[str, LoadedSAE], ivs: list[Intervention], state: HookState):
    def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        cont = state.continuation if state.continuation is not None else resid.shape[1] == 1
        for iv in ivs:
            resid = apply_to_resid(resid, saes[iv.sae_key].sae, iv, skip_first=not cont)
        return resid

    return hook


def hooks_for(interventions: list[Intervention], saes: dict[str, LoadedSAE],
              state: HookState | None = None) -> list[tuple[str, object]]:
    """(hook_name, fn) pairs: one hook per hook point, applying its interventions in order."""
    validate(interventions, saes)
    state = state or HookState()
    by_hook: dict[str, list[Intervention]] = {}
    for iv in interventions:
        by_hook.setdefault(saes[iv.sae_key].hook_name, []).append(iv)
    return [(name, make_hook(saes, ivs, state)) for name, ivs in by_hook.items()]


@contextlib.contextmanager
def intervened(model, interventions: list[Intervention] | None, saes: dict[str, LoadedSAE],
               state: HookState | None = None):
    """Every forward pass inside the block (including generation steps) is intervened."""
    if not interventions:
        yield model
        return
    with model.hooks(fwd_hooks=hooks_for(interventions, saes, state)):
        yield model


def parse_features(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """'12,40,7' or '12 40' or a list -> (12, 40, 7), with a clear error for junk."""
    if isinstance(text, (list, tuple)):
        return tuple(int(x) for x in text)
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError as e:
        raise ValueError(f"features must be integers separated by commas, got {text!r}") from e
