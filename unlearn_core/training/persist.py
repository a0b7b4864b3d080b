"""Persistent SAE-guided unlearning (after CRISP, Ashuach et al. 2025): the clamp's features
suppressed by a weight edit, so the unlearning stays when the hook is gone.

What is trained: a delta on chosen MLP output matrices (``W_out``) of the blocks up to the SAE's
layer, with Adam, on three terms (each a number that starts where it reads easily):

* **forget** - on forget text, at every token where a selected feature fires in the original
  model, the feature's SAE *pre-activation* is pushed down to ``-margin`` (a hinge, as CRISP's loss
  on the positive activations): ``sum relu(pre + margin) / sum (pre0 + margin)``, 1 at the start,
  0 when every firing is gone. ``margin = 0`` is "to zero"; ``margin > 0`` is "below zero", the
  option that mirrors a clamp at ``-c`` (a JumpReLU's activation has no gradient across its jump,
  so the pre-activation is what can be pushed).
  ``forget_mode = "clamp"`` is the other option: the edited residual on forget text is pulled to
  what the paper's clamp makes of it (firing features set to ``-c``, the error term kept),
  ``|x - x*|^2 / |x* - x0|^2``: the hook's own effect, baked into the weights.
* **retain** - on retain text, the residual stream at ``retain_layers`` stays the original's:
  ``|x - x0|^2 / |x0|^2`` (relative, so Gemma's large residual norms do not swamp the other terms).
* **lm** - on retain text, KL(original || edited) of the next-token distributions: the
  language-modelling term that keeps the model's predictions (fluency, loss on general text) as
  they were; 0 skips the full forward it needs.

Why a delta and not ``peft``: TransformerLens keeps its weights as ``nn.Parameter`` tensors on its
own modules (``W_out`` of shape [d_mlp, d_model] used by ``einsum``), not ``nn.Linear``, so LoRA
has nothing to wrap; converting to the Hugging Face model and back would double the memory and
the code path. The delta is trained as RMU's is (``training.rmu``: one ``functional_call`` per
window, the shared weights never touched), so the server's other requests never see a half-trained
model, the frozen model is the weights without the delta, and the finished run is a model variant
``persist:<name>`` through ``training.variants``, everywhere ``rmu:<name>`` is.

BOS (position 0) is left out of every term, as in RMU and CRISP. With ``forget_weight = 0`` the
retain and lm terms are exactly zero with zero gradients at a zero delta, so the delta stays zero:
the no-op control (``_at_rest`` says why no gradient is even taken there).

A run lives under ``<cache_dir>/persist/<name>/`` as an RMU run does (spec, checkpoint every
``CHECKPOINT_EVERY`` steps, delta, card with the loss curve), so a killed run resumes.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from unlearn_core.core import cache as C
from unlearn_core.core.paths import ASSETS
from unlearn_core.training import checkpoints as CK
from unlearn_core.training import rmu
from unlearn_core.training import variants as V

KIND = "persist"
PREFIX = "persist:"
DEFAULTS_FILE = ASSETS / "persist.toml"
CHECKPOINT_EVERY = 10
TERMS = ("forget", "retain", "lm")
FORGET_MODES = ("suppress", "clamp")
RETAIN_NORMS = ("total", "per_dim")


class PersistError(V.VariantError):
    """Unusable settings, data or run; the message says which and why."""


class PersistCancelled(Exception):
    pass


@dataclass(frozen=True)
class PersistConfig:
    """The settings; ``core/assets/persist.toml`` holds per-model defaults."""

    update_layers: tuple[int, ...] = ()  # () means sae layer-2 .. sae layer
    retain_layers: tuple[int, ...] = ()  # () means the SAE's layer
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    lm_weight: float = 0.0
    margin: float = 0.0  # 0: pre-activations to zero; m > 0: to -m ("below zero")
    forget_mode: str = "suppress"  # "suppress" (CRISP) or "clamp" (the clamp's residual distilled)
    clamp: float = 0.0  # "clamp" mode's c (0: the target's c)
    retain_norm: str = "total"  # "total": |x-x0|^2/|x0|^2; "per_dim": each dimension by its own scale
    lr: float = 1e-4
    batch_size: int = 4
    steps: int = 100
    ctx: int = 128
    seed: int = 0
    method: str = ""  # the selection method ("" = the target's)
    n: int = 0  # features (0 = the target's N)
    sae: str = ""  # the SAE ("" = the engine's default)
    features: tuple[int, ...] = ()  # given features in place of the selection (e.g. the Feature search page's)

    def resolved(self, n_layers: int, sae_layer: int) -> "PersistConfig":
        """Checked against a model of ``n_layers`` blocks whose SAE reads after block ``sae_layer``."""
        ups = tuple(sorted(set(self.update_layers))) or tuple(range(max(0, sae_layer - 2), sae_layer + 1))
        keep = tuple(sorted(set(self.retain_layers))) or (sae_layer,)
        problems = []
        if [u for u in ups if not 0 <= u <= sae_layer]:
            problems.append(f"update_layers {list(ups)} must be between 0 and the SAE's layer {sae_layer}")
        if [k for k in keep if not min(ups) <= k < n_layers]:
            problems.append(f"retain_layers {list(keep)} must be between {min(ups)} and {n_layers - 1}")
        for name, ok in (
            ("lr", 0 <= self.lr <= 1.0),
            ("forget_weight", self.forget_weight >= 0),
            ("retain_weight", self.retain_weight >= 0),
            ("lm_weight", self.lm_weight >= 0),
            ("margin", 0 <= self.margin <= 1e6),
            ("batch_size", 1 <= self.batch_size <= 64),
            ("steps", 1 <= self.steps <= 100_000),
            ("ctx", 8 <= self.ctx <= 4096),
            ("n", 0 <= self.n <= 1000),
            ("clamp", 0 <= self.clamp <= 1e6),
        ):
            if not ok or not math.isfinite(float(getattr(self, name))):
                problems.append(f"{name} = {getattr(self, name)!r} is out of range")
        if self.retain_norm not in RETAIN_NORMS:
            problems.append(f"retain_norm {self.retain_norm!r} is not one of {RETAIN_NORMS}")
        if self.forget_mode not in FORGET_MODES:
            problems.append(f"forget_mode {self.forget_mode!r} is not one of {FORGET_MODES}")
        if problems:
            raise PersistError("bad persistent-unlearning settings: " + "; ".join(problems))
        return replace(self, update_layers=ups, retain_layers=keep)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d, **{k: list(d[k]) for k in ("update_layers", "retain_layers", "features")}}

    @classmethod
    def from_dict(cls, d: dict) -> "PersistConfig":
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("update_layers", "retain_layers", "features"):
            kw[k] = tuple(kw.get(k) or ())
        return cls(**kw)


def default_config(model_name: str, **overrides) -> PersistConfig:
    """The defaults for ``model_name`` from ``core/assets/persist.toml`` (else ``[reference]``), then
    ``overrides`` (None values ignored)."""
    table = tomllib.loads(DEFAULTS_FILE.read_text())
    base = table.get("models", {}).get(model_name) or table["reference"]
    kw = {k: v for k, v in base.items() if k in PersistConfig.__dataclass_fields__}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return PersistConfig.from_dict(kw)


def checked_config(engine, overrides: dict) -> PersistConfig:
    """The model's defaults with ``overrides``, checked against the loaded model and SAE (the server's)."""
    cfg = default_config(engine.model_name, **overrides)
    return cfg.resolved(engine.model.cfg.n_layers, sae_layer(engine, cfg)[1])


def config_from(d: dict) -> PersistConfig:
    return PersistConfig.from_dict(d)


def check_name(name: str) -> str:
    if not V.NAME_RE.match(name or ""):
        raise PersistError(f"persistent run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def run_dir(cache_dir: str | Path, name: str) -> Path:
    return V.run_dir(cache_dir, KIND, check_name(name))


def list_runs(cache_dir: str | Path) -> list[dict]:
    return V.list_runs(cache_dir, KIND)


def param_names(layers: tuple[int, ...]) -> list[str]:
    return rmu.param_names(layers)


# ------------------------------------------------------------------------------------ features


@dataclass(frozen=True)
class Selected:
    """The features the forget term suppresses, and the SAE they are read with."""

    sae_key: str
    hook: str
    layer: int
    features: tuple[int, ...]
    method: str
    c: float = 0.0  # the clamp's c ("clamp" mode)


def sae_layer(engine, cfg: PersistConfig) -> tuple[str, int]:
    key = cfg.sae or engine.default_sae
    if key not in engine.saes:
        raise PersistError(f"SAE {key!r} is not loaded; loaded: {sorted(engine.saes)}")
    s = engine.saes[key]
    if s.layer is None or not s.hook_name.endswith("hook_resid_post"):
        raise PersistError(f"SAE {key!r} reads {s.hook_name!r}; the persistent method needs a resid_post SAE")
    return key, s.layer


def select(engine, target, cfg: PersistConfig, progress=None) -> Selected:
    """The target's selection (its method and N unless ``cfg`` names others)."""
    from unlearn_core.evaluation.targets import select_for_target

    key, layer = sae_layer(engine, cfg)
    if cfg.features:
        d_sae = engine.saes[key].d_sae
        bad = [f for f in cfg.features if not 0 <= f < d_sae]
        if bad:
            raise PersistError(f"features {bad} are not features of SAE {key!r} (0..{d_sae - 1})")
        return Selected(key, engine.saes[key].hook_name, layer, tuple(cfg.features), "given", cfg.clamp)
    rows = select_for_target(engine, target, key, n=cfg.n or None, method=cfg.method or None, progress=progress)
    feats = tuple(int(r["feature"]) for r in rows["features"])
    if not feats:
        raise PersistError(f"target {target.name!r}: its selection ({rows.get('method')}) picked no feature")
    c = cfg.clamp or float(target.intervention.c)
    return Selected(key, engine.saes[key].hook_name, layer, feats, str(rows.get("method")), c)


def pre_acts(sae, x: torch.Tensor, features: tuple[int, ...]) -> torch.Tensor:
    """The selected features' encoder pre-activations of residuals ``x`` (differentiable in ``x``)."""
    idx = torch.tensor(features, device=x.device)
    sae_in = sae.process_sae_in(x.to(sae.W_enc.dtype))
    return sae_in @ sae.W_enc[:, idx] + sae.b_enc[idx]


def firing(sae, x: torch.Tensor, features: tuple[int, ...]) -> torch.Tensor:
    """Where each selected feature fires in ``x`` (its SAE activation > 0), as a bool mask."""
    with torch.no_grad():
        return sae.encode(x.to(sae.W_enc.dtype))[..., list(features)] > 0


# ------------------------------------------------------------------------------------ losses


def forward_layers(model, start: torch.Tensor, first: int, layers: tuple[int, ...], weights: dict | None, logits: bool):
    """Residuals after each block in ``layers`` (ascending), from the residual before block ``first``;
    and the logits when ``logits``. One pass, cut at each layer asked for."""
    out: dict = {}
    x, at = start, first
    for layer in sorted(set(layers)):
        x = rmu.resid_from(model, x, at, layer, weights)
        out[layer], at = x, layer + 1
    if logits:  # the model's own tail (final norm, unembedding, any soft cap), from block ``at`` on
        kw = {"start_at_layer": at}
        call = torch.func.functional_call(model, weights, (x,), kw, strict=False) if weights else model(x, **kw)
        out["logits"] = call
    return out


def window_terms(engine, sel: Selected, cfg: PersistConfig, delta: dict, forget: list[int], retain: list[int]) -> dict:
    """One forget and one retain window's three terms, as differentiable tensors (the delta's graph)."""
    model = engine.model
    sae = engine.saes[sel.sae_key].sae
    dev = model.cfg.device
    first = min(cfg.update_layers)
    params = dict(model.named_parameters())
    weights = {k: params[k] + d for k, d in delta.items()}
    keep = tuple(cfg.retain_layers)
    lm = cfg.lm_weight > 0
    zero = torch.zeros(())
    with torch.no_grad():
        f_in = model(torch.tensor([forget], device=dev), stop_at_layer=first)
        r_in = model(torch.tensor([retain], device=dev), stop_at_layer=first)
        f0 = forward_layers(model, f_in, first, (sel.layer,), None, False)[sel.layer][:, 1:]
        r0 = forward_layers(model, r_in, first, keep, None, lm)
    terms = {"forget": zero, "retain": zero, "lm": zero}
    if cfg.forget_weight > 0 and cfg.forget_mode == "clamp":
        terms["forget"] = _clamp_term(model, sae, sel, f_in, f0, first, weights)
    elif cfg.forget_weight > 0:
        mask = firing(sae, f0, sel.features)
        if mask.any():
            base = (pre_acts(sae, f0, sel.features)[mask] + cfg.margin).sum()
            f = forward_layers(model, f_in, first, (sel.layer,), weights, False)[sel.layer][:, 1:]
            now = torch.relu(pre_acts(sae, f, sel.features)[mask] + cfg.margin).sum()
            terms["forget"] = now / base.clamp_min(1e-6)
    r = forward_layers(model, r_in, first, keep, weights, lm)
    terms["retain"] = sum(retain_change(r[k][:, 1:], r0[k][:, 1:], cfg.retain_norm) for k in keep) / len(keep)
    if lm:
        lp0 = torch.log_softmax(r0["logits"][:, 1:].float(), -1)
        lp = torch.log_softmax(r["logits"][:, 1:].float(), -1)
        terms["lm"] = (lp0.exp() * (lp0 - lp)).sum(-1).mean()
    return terms


def clamped(sae, x: torch.Tensor, features: tuple[int, ...], c: float) -> torch.Tensor:
    """The paper's clamp of residuals ``x``: where a selected feature fires, its activation set to
    -c, the error term kept (x + sum over firing features of (-c - a) * W_dec row)."""
    with torch.no_grad():
        acts = sae.encode(x.to(sae.W_enc.dtype))[..., list(features)]
        change = torch.where(acts > 0, -c - acts, torch.zeros_like(acts))
        return x + (change @ sae.W_dec[list(features)]).to(x.dtype)


def _clamp_term(model, sae, sel: Selected, f_in, f0, first: int, weights: dict) -> torch.Tensor:
    """``clamp`` mode: the edited residual on forget text pulled to the clamped one,
    ``|x - x*|^2 / |x* - x0|^2`` (1 at the start, 0 when the weights do what the hook did)."""
    if sel.c <= 0:
        raise PersistError("forget_mode 'clamp' needs a clamp value c > 0 (the target's, or --clamp)")
    goal = clamped(sae, f0, sel.features, sel.c)
    size = (goal - f0).pow(2).sum()
    if float(size) == 0.0:
        return torch.zeros(())
    f = forward_layers(model, f_in, first, (sel.layer,), weights, False)[sel.layer][:, 1:]
    return (f - goal).pow(2).sum() / size


def retain_change(x: torch.Tensor, x0: torch.Tensor, norm: str) -> torch.Tensor:
    """How far residuals ``x`` moved from the original ``x0``, relative. ``total``: to the whole
    energy; ``per_dim``: each dimension to its own mean square over the window's tokens, so a few
    dimensions of very large magnitude (Gemma's residual has them) do not hide changes in the rest."""
    if norm == "per_dim":
        scale = x0.pow(2).mean(dim=(0, 1), keepdim=True).clamp_min(1e-6)
        return ((x - x0).pow(2) / scale).mean()
    return (x - x0).pow(2).sum() / x0.pow(2).sum().clamp_min(1e-12)


def total(cfg: PersistConfig, terms: dict) -> torch.Tensor:
    return cfg.forget_weight * terms["forget"] + cfg.retain_weight * terms["retain"] + cfg.lm_weight * terms["lm"]


def _at_rest(cfg: PersistConfig, state: rmu.TrainState) -> bool:
    """No forget term and a zero delta: a stationary point (the retain and lm terms and their exact
    gradients are zero there), so no gradient is taken. Backpropagating anyway would hand Adam the
    KL's float rounding (about 1e-9), which it scales up to lr-sized steps: the no-op control would
    drift."""
    return cfg.forget_weight == 0 and all(not bool(d.detach().any()) for d in state.delta.values())


def _window_grads(engine, state: rmu.TrainState, sel: Selected, cfg: PersistConfig, f, r, share: float) -> dict:
    """Backpropagate one window pair's loss (times ``share``) into the delta; its terms as floats."""
    sae = engine.saes[sel.sae_key].sae
    with torch.inference_mode(False), rmu.no_param_grads(engine.model), rmu.no_param_grads(sae):
        with torch.enable_grad():
            terms = window_terms(engine, sel, cfg, state.delta, f, r)
            loss = total(cfg, terms)
            if loss.requires_grad and not _at_rest(cfg, state):
                (loss * share).backward()
    return {k: float(v.detach()) for k, v in terms.items()}


def train_step(engine, state: rmu.TrainState, data: rmu.RMUData, sel: Selected, cfg: PersistConfig, run=None) -> dict:
    """One batch: each window pair's gradients accumulated (one hold of ``run`` each), one Adam step."""
    run = run or (lambda fn: fn(engine))
    forget, retain = data.batch(state.step, cfg.batch_size)
    state.opt.zero_grad(set_to_none=True)
    share = 1.0 / len(forget)
    parts = [run(lambda e, f=f, r=r: _window_grads(e, state, sel, cfg, f, r, share)) for f, r in zip(forget, retain)]
    with torch.inference_mode(False):
        state.opt.step()
    state.step += 1
    rec = {"step": state.step, **{f"{t}_loss": sum(p[t] for p in parts) * share for t in TERMS}}
    rec["loss"] = (
        cfg.forget_weight * rec["forget_loss"] + cfg.retain_weight * rec["retain_loss"] + cfg.lm_weight * rec["lm_loss"]
    )
    state.history.append(rec)
    return rec


# ------------------------------------------------------------------------------------ runs


def spec_of(engine, name: str, target, cfg: PersistConfig, data: rmu.RMUData, sel: Selected) -> dict:
    return {
        "name": name,
        "kind": KIND,
        "model": engine.model_name,
        "namespace": engine.cache_namespace(),
        "target": target.name,
        "forget_corpus": data.forget_corpus,
        "retain_corpora": data.retain_corpora,
        "config": cfg.to_dict(),
        "sae": sel.sae_key,
        "hook": sel.hook,
        "features": list(sel.features),
        "selection": sel.method,
        "c": sel.c,
        "data_digest": data.digest(),
        "n_forget_windows": len(data.forget),
        "n_retain_windows": len(data.retain),
        "params": param_names(cfg.update_layers),
    }


def prepare(engine, target, cfg: PersistConfig, run=None) -> tuple[PersistConfig, Selected, rmu.RMUData]:
    """The resolved settings, the features and the windows of a run (each model use one ``run`` hold)."""
    run = run or (lambda fn: fn(engine))
    key, layer = sae_layer(engine, cfg)
    cfg = cfg.resolved(engine.model.cfg.n_layers, layer)
    sel = run(lambda e: select(e, target, cfg))
    data = run(lambda e: rmu.target_data(e, target, cfg))
    return cfg, sel, data


def train(
    engine,
    name: str,
    target,
    cfg: PersistConfig,
    *,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    run_step: Callable[[Callable], object] | None = None,
    fresh: bool = False,
) -> dict:
    """Train (or resume) run ``name`` and return its card; the arguments as ``rmu.train``'s."""
    if engine.variant:
        raise PersistError("the persistent method trains on the base model; leave the model variant first")
    folder = run_dir(engine.settings.cache_dir, name)
    run = run_step or (lambda fn: fn(engine))
    cfg, sel, data = prepare(engine, target, cfg, run)
    spec = spec_of(engine, name, target, cfg, data, sel)
    _reset_if_changed(folder, spec, fresh, name)
    if (folder / "card.json").exists():
        return json.loads((folder / "card.json").read_text())
    C.atomic_write_json(folder / "spec.json", {**spec, "created": time.time()})
    (folder / "status.json").unlink(missing_ok=True)
    ckpt = folder / "checkpoint.safetensors"
    torch.manual_seed(cfg.seed)
    state = rmu.new_delta(engine.model, param_names(cfg.update_layers), cfg.lr)
    if ckpt.exists():
        meta = run(lambda e: CK.load(ckpt, state.delta, state.opt))
        state.step, state.seconds, state.history = int(meta["step"]), float(meta["seconds"]), meta["history"]
    resumed_at, t_run = state.step, time.time()
    while state.step < cfg.steps:
        why = should_stop() if should_stop else None
        if why:
            _save(ckpt, state)
            if why == "cancel":
                C.atomic_write_json(folder / "status.json", {"status": "cancelled", "step": state.step})
            raise PersistCancelled(f"persistent run {name!r} stopped at step {state.step} ({why})")
        t0 = time.time()
        rec = train_step(engine, state, data, sel, cfg, run)
        state.seconds += time.time() - t0
        rate = (time.time() - t_run) / (state.step - resumed_at)
        rec = {**rec, "steps": cfg.steps, "eta_s": rate * (cfg.steps - state.step), "resumed_at": resumed_at}
        if progress:
            progress(rec)
        if state.step % CHECKPOINT_EVERY == 0 or state.step == cfg.steps:
            _save(ckpt, state)
    return _finish(folder, spec, state)


def _reset_if_changed(folder: Path, spec: dict, fresh: bool, name: str) -> None:
    old = C.read_json(folder / "spec.json")
    same = old is not None and {k: v for k, v in old.items() if k != "created"} == spec
    if old is None or (same and not fresh):
        return
    if not fresh and (folder / "card.json").exists():
        raise PersistError(
            f"a persistent run named {name!r} already exists with other settings; choose another name or delete it"
        )
    for f in ("checkpoint.safetensors", "delta.safetensors", "card.json", "status.json"):
        (folder / f).unlink(missing_ok=True)


def _save(path: Path, state: rmu.TrainState) -> None:
    CK.save(path, state.delta, state.opt, {"step": state.step, "seconds": state.seconds, "history": state.history})


def _finish(folder: Path, spec: dict, state: rmu.TrainState) -> dict:
    return V.finish_run(folder, spec, state, KIND)


def card_of(cache_dir: str | Path, name: str) -> dict:
    """A finished run's card (with its loss curve)."""
    return V.load(cache_dir, PREFIX + check_name(name))[1]
