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
* ``gated``  conditional (Dynamic SAE Guardrails' gate): per sequence, rho = the fraction of its
  counted prompt positions (not BOS, EOS or pad) where at least one selected feature is > 0. If
  rho > tau (``gate``) the sequence gets ``clamp`` exactly; otherwise it is left exactly unchanged.
* ``dsg``    the same gate with DSG's own clamp: once open, *every* selected feature is set to
  ``-c`` at every position where *any* of them fires.

The gate reads the token ids (captured at TransformerLens's ``hook_tokens``, which
``enable_token_hook`` switches on) to leave special tokens out of rho. It decides once per
prompt: KV-cached continuation steps (generation) follow the prompt's decision, and a caller
scoring answers after a prompt (cloze) names the prompt's length with ``gate_prompt``.

BOS is never touched (the paper zeroes the codes at position 0). During KV-cached generation a
forward pass of a single token is a continuation, so its position 0 is *not* BOS and is
intervened like every other generated token.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from unlearn_core.method.modes import (  # noqa: F401 (re-exported)
    GATED_MODES,
    MAX_ABS_CLAMP,
    MAX_SCALE,
    MODE_LABELS,
    MODES,
)
from unlearn_core.model.saes import LoadedSAE

# Set by a caller whose rows are a prompt followed by scored answer tokens (cloze): the gate
# counts only the first ``n`` positions, so every answer row gets the prompt's decision.
_GATE_PROMPT: contextvars.ContextVar[int | Sequence[int] | None] = contextvars.ContextVar("gate_prompt", default=None)


@dataclass(frozen=True)
class Intervention:
    sae_key: str
    features: tuple[int, ...]
    value: float = 20.0  # c: features are set to -c
    mode: str = "clamp"
    gate: float | None = None  # tau, gated modes only: open when rho > tau
    # per-feature clamp values c_i = c * scales[i] (one per feature, in order), so one c means the
    # same strength for features of different activation scales (``clamp_scales``); None: c for all
    scales: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode in GATED_MODES:
            if self.gate is None or not math.isfinite(self.gate) or not 0.0 <= self.gate <= 1.0:
                raise ValueError(f"mode {self.mode!r} needs a gate tau in [0, 1], got {self.gate!r}")
            object.__setattr__(self, "gate", float(self.gate))
        elif self.gate is not None:
            raise ValueError(f"a gate (tau) is only for the gated modes {GATED_MODES}, not {self.mode!r}")
        if not math.isfinite(self.value) or abs(self.value) > MAX_ABS_CLAMP:
            raise ValueError(f"clamp value must be finite and |c| <= {MAX_ABS_CLAMP}, got {self.value}")
        if self.mode != "reconstruct" and not self.features:
            raise ValueError(f"mode {self.mode!r} needs at least one feature")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if any(f < 0 for f in self.features):
            raise ValueError("feature ids must be >= 0")
        if self.scales is not None:
            scales = tuple(float(x) for x in self.scales)
            if len(scales) != len(self.features):
                raise ValueError(f"scales: one per feature ({len(self.features)}), got {len(scales)}")
            if not all(math.isfinite(x) and 0 < x <= MAX_SCALE for x in scales):
                raise ValueError(f"scales must be finite, > 0 and <= {MAX_SCALE:g}")
            object.__setattr__(self, "scales", scales)

    @property
    def c(self) -> float:
        return 0.0 if self.mode == "zero" else float(self.value)

    def clamp_values(self, like: torch.Tensor) -> torch.Tensor:
        """The value each selected feature is set to, [F] like ``like`` (-c, or -c * scale_i)."""
        c = torch.full((len(self.features),), -self.c, dtype=like.dtype, device=like.device)
        return c if self.scales is None else c * torch.tensor(self.scales, dtype=like.dtype, device=like.device)

    def label(self) -> str:
        gate = f" gate τ={self.gate:g}" if self.gate is not None else ""
        per = " (per-feature scales)" if self.scales is not None else ""
        return f"{self.mode} c={self.c:g}{per}{gate} on {len(self.features)} feature(s) of {self.sae_key}"


@dataclass
class HookState:
    """What the hooks of one forward pass (or one generation) share."""

    continuation: bool | None = None  # None: infer (seq_len == 1 means a KV-cached step)
    special_ids: tuple[int, ...] = ()  # BOS, EOS, pad: not counted by the gate
    tokens: torch.Tensor | None = None  # the last full pass's token ids (hook_tokens)
    rho: dict[int, torch.Tensor] = field(default_factory=dict)  # per gated intervention: [batch]
    open: dict[int, torch.Tensor] = field(default_factory=dict)  # its decision, kept for continuations


@contextlib.contextmanager
def gate_prompt(n: int | Sequence[int] | None):
    """Inside the block the gate counts only the first ``n`` positions of each row (the prompt),
    or of row b the first ``n[b]`` (several questions' rows in one batch)."""
    token = _GATE_PROMPT.set(n)
    try:
        yield
    finally:
        _GATE_PROMPT.reset(token)


def counted_positions(
    tokens: torch.Tensor, special_ids: tuple[int, ...], prompt_len: int | Sequence[int] | None = None
) -> torch.Tensor:
    """[B, T] bool: the positions the gate counts (not a special token; within the prompt, whose
    length is one for all rows or one per row)."""
    counted = ~torch.isin(tokens, torch.tensor(list(special_ids), dtype=tokens.dtype, device=tokens.device))
    if isinstance(prompt_len, int):
        counted[:, prompt_len:] = False
    elif prompt_len is not None:
        lens = torch.as_tensor(list(prompt_len), device=tokens.device)
        if lens.shape != (tokens.shape[0],):
            raise ValueError(f"gate_prompt: {lens.numel()} prompt lengths for {tokens.shape[0]} rows")
        counted &= torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lens[:, None]
    return counted


def gate_fraction(selected: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """rho per row: the fraction of counted positions where any of ``selected`` [B, T, F] is > 0."""
    fires = (selected > 0).any(-1) & counted.to(selected.device)
    return fires.sum(1).to(torch.float32) / counted.sum(1).clamp(min=1).to(fires.device, torch.float32)


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
        W = sae.W_dec[feats]
        delta = -iv.c * W.sum(0) if iv.scales is None else iv.clamp_values(W) @ W  # sum_i -c_i W_dec[i]
        out = x + delta
        if skip_first:
            out[:, 0] = x[:, 0]
        return out.to(dtype)
    f = sae.encode(x)
    if skip_first:
        f[:, 0, :] = 0.0
    return _clamped(x, f, sae, iv, skip_first).to(dtype)


def _clamped(x: torch.Tensor, f: torch.Tensor, sae, iv: Intervention, skip_first: bool) -> torch.Tensor:
    """x with the selected codes of ``f`` (BOS already zeroed) clamped, error kept (or dropped)."""
    feats = list(iv.features)
    recon = sae.decode(f)
    if feats:
        sel = f[..., feats]
        target = iv.clamp_values(sel).expand_as(sel)
        if iv.mode == "dsg":  # every selected feature, wherever any of them fires
            f[..., feats] = torch.where((sel > 0).any(-1, keepdim=True), target, sel)
        else:
            f[..., feats] = torch.where(sel > 0, target, sel)
    new_recon = sae.decode(f)
    # error + new_recon, with error = x - recon, written so that positions where nothing
    # changed come back bit-for-bit equal to the input (no float round-off through the SAE).
    out = new_recon if iv.mode == "reconstruct" else x + (new_recon - recon)
    if skip_first:
        out[:, 0] = x[:, 0]
    return out


def apply_gated(
    resid: torch.Tensor,
    sae,
    iv: Intervention,
    skip_first: bool,
    counted: torch.Tensor | None,
    decided: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A gated intervention on [batch, pos, d]: (output, rho or None, open [batch]). Rows whose
    gate is shut come back exactly equal to the input. ``decided`` (a continuation step) is the
    prompt's decision; else rho is measured over ``counted`` positions."""
    dtype = resid.dtype
    x = resid.to(sae.W_enc.dtype)
    f = sae.encode(x)
    if skip_first:
        f[:, 0, :] = 0.0
    rho = None
    if decided is None:
        rho = gate_fraction(f[..., list(iv.features)], counted)
        decided = rho > iv.gate
    if not bool(decided.any()):
        return resid, rho, decided
    out = torch.where(decided.to(x.device)[:, None, None], _clamped(x, f, sae, iv, skip_first), x)
    return out.to(dtype), rho, decided


def make_hook(saes: dict[str, LoadedSAE], ivs: list[tuple[int, Intervention]], state: HookState):
    def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        cont = state.continuation if state.continuation is not None else resid.shape[1] == 1
        for i, iv in ivs:
            sae = saes[iv.sae_key].sae
            if iv.mode not in GATED_MODES:
                resid = apply_to_resid(resid, sae, iv, skip_first=not cont)
                continue
            if cont:  # a generated token: the prompt's decision stands
                if i not in state.open or state.open[i].shape[0] != resid.shape[0]:
                    raise RuntimeError("gated intervention: a continuation step with no prompt decision")
                resid, _, _ = apply_gated(resid, sae, iv, False, None, state.open[i])
                continue
            if state.tokens is None or tuple(state.tokens.shape) != tuple(resid.shape[:2]):
                raise RuntimeError(
                    "gated intervention: no token ids for this pass (the model needs hook_tokens: "
                    "interventions.enable_token_hook, done by the engine loaders)"
                )
            counted = counted_positions(state.tokens, state.special_ids, _GATE_PROMPT.get())
            resid, state.rho[i], state.open[i] = apply_gated(resid, sae, iv, True, counted)
        return resid

    return hook


def hooks_for(
    interventions: list[Intervention], saes: dict[str, LoadedSAE], state: HookState | None = None
) -> list[tuple[str, object]]:
    """(hook_name, fn) pairs: one hook per hook point, applying its interventions in order (and,
    with a gated one, ``hook_tokens`` to read the token ids)."""
    validate(interventions, saes)
    state = state or HookState()
    by_hook: dict[str, list[tuple[int, Intervention]]] = {}
    for i, iv in enumerate(interventions):
        by_hook.setdefault(saes[iv.sae_key].hook_name, []).append((i, iv))
    hooks = [(name, make_hook(saes, ivs, state)) for name, ivs in by_hook.items()]
    if any(iv.mode in GATED_MODES for iv in interventions):

        def grab(tokens: torch.Tensor, hook=None) -> torch.Tensor:
            if tokens.shape[1] > 1 or state.continuation is False:  # a prompt, not a cached step
                state.tokens = tokens
            return tokens

        hooks.insert(0, ("hook_tokens", grab))
    return hooks


def enable_token_hook(model) -> None:
    """Switch on TransformerLens's ``hook_tokens`` (off by default) so gated hooks see the token
    ids of every pass that starts from tokens; an identity hook point, nothing else changes."""
    from transformer_lens.hook_points import HookPoint

    if getattr(model, "hook_tokens", None) is None:
        model.cfg.use_hook_tokens = True
        model.hook_tokens = HookPoint()
        model.setup()


def special_ids(tokenizer) -> tuple[int, ...]:
    """BOS, EOS and pad ids of ``tokenizer`` (the positions the gate does not count)."""
    ids = {getattr(tokenizer, a, None) for a in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return tuple(sorted(i for i in ids if i is not None))


@contextlib.contextmanager
def intervened(
    model, interventions: list[Intervention] | None, saes: dict[str, LoadedSAE], state: HookState | None = None
):
    """Every forward pass inside the block (including generation steps) is intervened."""
    if not interventions:
        yield model
        return
    state = state or HookState(special_ids=special_ids(model.tokenizer))
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
