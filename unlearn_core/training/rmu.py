"""RMU (Representation Misdirection for Unlearning; Li et al. 2024, "The WMDP Benchmark"): the
fine-tuning baseline the SAE clamp is compared with, trained on a target's own forget and
retain text.

The method, as the reference implementation (``rmu/unlearn.py`` of the WMDP repository) does it:
the residual stream after block ``layer`` is pushed, on forget text, toward ``c * u`` (u a fixed
random unit vector, MSE), and kept, on retain text, equal to the frozen model's (MSE weighted by
``alpha``). Only the MLP output weights (``W_out``) of ``update_layers`` change, with Adam.

What differs, and why:

* The trained thing is a *delta* on those weights, never the shared model's own parameters: a
  step runs the model with ``W_out + delta`` swapped in for the one call
  (``torch.func.functional_call``), so the server's other requests never see a half-trained model
  and the frozen model is the same weights without the delta (no second copy in memory).
* Position 0 (BOS) is left out of both losses: its residual is the same for every text, so
  steering it on forget text and keeping it on retain text contradict each other (and Gemma's
  BOS residual is orders of magnitude larger than the others, so it would dominate the MSE).
* ``steering_coeff = 0`` switches the forget term off (the no-op control: the retain term is
  then zero with a zero gradient, and the delta stays zero). The reference's MSE to the zero
  vector would shrink forget activations instead, which is a different method.
* No weight decay (the reference's AdamW decays the full weights by ~1e-4 over a run; on a
  delta it would pull toward the clean model, a different regulariser).

A run lives under ``<cache_dir>/rmu/<name>/``: ``spec.json`` (what is trained), ``checkpoint
.safetensors`` (delta, Adam state, step; written atomically every few steps, so a killed run
resumes), then ``delta.safetensors`` and ``card.json`` (data, hyperparameters, steps, time, seed,
loss curve). The model variant ``rmu:<name>`` applies the delta in place for the duration of a
``with applied(engine, "rmu:<name>")`` block and restores the exact weights after.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from unlearn_core.core import cache as C
from unlearn_core.core.devices import cpu_name  # noqa: F401 (re-exported: bench, older imports)
from unlearn_core.core.paths import ASSETS
from unlearn_core.training import checkpoints as CK
from unlearn_core.training import variants as V
from unlearn_core.training.variants import _LOADED, applied, delta_added  # noqa: F401 (re-exported)

PREFIX = "rmu:"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULTS_FILE = ASSETS / "rmu.toml"
CHECKPOINT_EVERY = 10  # steps between checkpoints (a resumed run repeats at most this many)


class RMUError(V.VariantError):
    """Unusable RMU hyperparameters, data or run; the message says which and why."""


class RMUCancelled(Exception):
    pass


@dataclass(frozen=True)
class RMUConfig:
    """The hyperparameters. Reference values (zephyr-7b): layer 7, layers 5-7 updated, c 6.5,
    alpha 1200, lr 5e-5, batch 4, 150 batches; ``core/assets/rmu.toml`` holds per-model defaults."""

    layer: int = 7
    update_layers: tuple[int, ...] = ()  # () means layer-2 .. layer
    steering_coeff: float = 6.5
    alpha: float = 1200.0
    lr: float = 5e-5
    batch_size: int = 4
    steps: int = 150
    ctx: int = 128  # tokens per training window (BOS + ctx-1)
    seed: int = 0

    def resolved(self, n_layers: int) -> "RMUConfig":
        """Checked against a model of ``n_layers`` blocks, ``update_layers`` filled in."""
        problems = []
        if not (0 <= self.layer < n_layers):
            problems.append(f"layer {self.layer} is not a layer of this model (0..{n_layers - 1})")
        ups = tuple(sorted(set(self.update_layers))) or tuple(range(max(0, self.layer - 2), self.layer + 1))
        bad = [u for u in ups if not (0 <= u <= self.layer)]
        if bad and not problems:
            problems.append(f"update_layers {bad} must be between 0 and the steered layer {self.layer}")
        for name, ok in (
            ("lr", self.lr > 0),
            ("alpha", self.alpha >= 0),
            ("steering_coeff", self.steering_coeff >= 0),
            ("batch_size", 1 <= self.batch_size <= 64),
            ("steps", 1 <= self.steps <= 100_000),
            ("ctx", 8 <= self.ctx <= 4096),
        ):
            if not ok or not math.isfinite(float(getattr(self, name))):
                problems.append(f"{name} = {getattr(self, name)!r} is out of range")
        if problems:
            raise RMUError("bad RMU hyperparameters: " + "; ".join(problems))
        return replace(self, update_layers=ups)

    def to_dict(self) -> dict:
        return {**asdict(self), "update_layers": list(self.update_layers)}


def default_config(model_name: str, **overrides) -> RMUConfig:
    """The defaults for ``model_name`` from ``core/assets/rmu.toml`` (else the reference's), then
    ``overrides`` (None values ignored)."""
    table = tomllib.loads(DEFAULTS_FILE.read_text())
    base = table.get("models", {}).get(model_name) or table["reference"]
    kw = {k: (tuple(v) if k == "update_layers" else v) for k, v in base.items() if k in RMUConfig.__dataclass_fields__}
    given = {k: (tuple(v) if k == "update_layers" else v) for k, v in overrides.items() if v is not None}
    if "layer" in given and "update_layers" not in given:
        kw.pop("update_layers", None)  # the default for another layer: layer-2 .. layer
    kw.update(given)
    return RMUConfig(**kw)


def checked_config(engine, overrides: dict) -> RMUConfig:
    """The model's defaults with ``overrides``, checked against the loaded model (the server's)."""
    return default_config(engine.model_name, **overrides).resolved(engine.model.cfg.n_layers)


def config_from(d: dict) -> RMUConfig:
    return RMUConfig(**{**d, "update_layers": tuple(d.get("update_layers") or ())})


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise RMUError(f"RMU run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def run_dir(cache_dir: str | Path, name: str) -> Path:
    return Path(cache_dir) / "rmu" / check_name(name)


def param_names(layers: tuple[int, ...]) -> list[str]:
    return [f"blocks.{i}.mlp.W_out" for i in layers]


# ------------------------------------------------------------------------------------ data


@dataclass
class RMUData:
    forget: list[list[int]]
    retain: list[list[int]]
    forget_corpus: str
    retain_corpora: list[str]

    def digest(self) -> str:
        return C.key_of(self.forget, self.retain)

    def batch(self, step: int, size: int) -> tuple[list[list[int]], list[list[int]]]:
        """Step ``step``'s forget and retain windows (cycling; the same for a resumed run)."""
        pick = lambda ws: [ws[(step * size + j) % len(ws)] for j in range(size)]  # noqa: E731
        return pick(self.forget), pick(self.retain)


def full_windows(engine, spec: str, n_tokens: int, ctx: int) -> list[list[int]]:
    from unlearn_core.features.stats import corpus_docs, windows_for

    return [w for w in windows_for(engine, corpus_docs(engine, spec), n_tokens, ctx) if len(w) == ctx]


def target_data(engine, target, cfg: RMUConfig) -> RMUData:
    """Forget windows from the target's forget corpus (its fallback when that cannot be had),
    retain windows interleaved from its retain corpora: as many as the run's batches need."""
    from unlearn_core.data.loaders import DataUnavailableError

    need = cfg.steps * cfg.batch_size * (cfg.ctx - 1)
    spec = target.forget_corpus
    try:
        forget = full_windows(engine, spec, need, cfg.ctx)
    except DataUnavailableError:
        if not target.forget_corpus_fallback:
            raise
        spec = target.forget_corpus_fallback
        forget = full_windows(engine, spec, need, cfg.ctx)
    per = [
        full_windows(engine, r, need // max(1, len(target.retain_corpora)) + cfg.ctx, cfg.ctx)
        for r in target.retain_corpora
    ]
    retain = [w for group in zip(*per) for w in group] if per and all(per) else [w for p in per for w in p]
    if not forget or not retain:
        raise RMUError(
            f"target {target.name!r}: no full {cfg.ctx}-token window of "
            + ("forget" if not forget else "retain")
            + " text; use a smaller --ctx"
        )
    return RMUData(forget, retain, spec, list(target.retain_corpora))


# ------------------------------------------------------------------------------------ training


def control_vector(d_model: int, seed: int, coeff: float) -> torch.Tensor:
    """c * u, u uniform in [0, 1)^d normalised (as the reference draws it), fixed by the seed."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(d_model, generator=g)
    return coeff * u / u.norm()


@contextlib.contextmanager
def no_param_grads(model) -> Iterator[None]:
    """Autograd tracks only the delta: no gradients for (or into) the shared model's weights."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def resid_from(model, start: torch.Tensor, first: int, layer: int, weights: dict | None = None) -> torch.Tensor:
    """The residual after block ``layer``, from the residual before block ``first``; with
    ``weights`` swapped in for the call (shared with ``attacks.relearn``)."""
    kw = {"start_at_layer": first, "stop_at_layer": layer + 1}
    if weights:
        return torch.func.functional_call(model, weights, (start,), kw, strict=False)
    return model(start, **kw)


@dataclass
class TrainState:
    delta: dict[str, torch.Tensor]
    opt: torch.optim.Optimizer
    step: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def new_state(model, cfg: RMUConfig) -> TrainState:
    return new_delta(model, param_names(cfg.update_layers), cfg.lr)


def new_delta(model, names: list[str], lr: float) -> TrainState:
    """A zero delta on the parameters ``names`` and its Adam (shared with ``attacks.relearn``)."""
    params = dict(model.named_parameters())
    delta = {k: torch.zeros_like(params[k], requires_grad=True) for k in names}
    return TrainState(delta, torch.optim.Adam(list(delta.values()), lr=lr))


def _window_grads(
    engine, state: TrainState, forget: list[int], retain: list[int], cfg: RMUConfig, control: torch.Tensor, share: float
) -> tuple[float, float]:
    """One forget and one retain window: their losses, times ``share``, backpropagated into the
    delta's gradients (accumulated over the batch). Returns the unweighted (forget, retain) MSEs."""
    model = engine.model
    dev = model.cfg.device
    first = min(cfg.update_layers)
    params = dict(model.named_parameters())
    with torch.inference_mode(False), no_param_grads(model):
        with torch.no_grad():
            f_in = model(torch.tensor([forget], device=dev), stop_at_layer=first)  # 0: the embeddings
            r_in = model(torch.tensor([retain], device=dev), stop_at_layer=first)
            frozen = resid_from(model, r_in, first, cfg.layer)[:, 1:]
        with torch.enable_grad():
            weights = {k: params[k] + d for k, d in state.delta.items()}
            r_out = resid_from(model, r_in, first, cfg.layer, weights)[:, 1:]
            retain_loss = torch.nn.functional.mse_loss(r_out, frozen)
            loss = cfg.alpha * retain_loss
            forget_loss = torch.zeros(())
            if cfg.steering_coeff > 0:
                f_out = resid_from(model, f_in, first, cfg.layer, weights)[:, 1:]
                forget_loss = torch.nn.functional.mse_loss(f_out, control.to(f_out).expand_as(f_out))
                loss = loss + forget_loss
            (loss * share).backward()
    return float(forget_loss.detach()), float(retain_loss.detach())


def train_step(
    engine,
    state: TrainState,
    data: RMUData,
    cfg: RMUConfig,
    control: torch.Tensor,
    run: Callable[[Callable], object] | None = None,
) -> dict:
    """One batch: for each (forget, retain) window pair, a forward from the first updated block to
    ``layer`` with and without the delta and both losses, gradients accumulated (the batch's MSE
    is the mean of the windows': they have the same length); then one Adam step. ``run(fn)`` runs
    ``fn(engine)`` per window pair (the server: one short hold of the model lock each). Returns
    the step's losses."""
    run = run or (lambda fn: fn(engine))
    forget, retain = data.batch(state.step, cfg.batch_size)
    state.opt.zero_grad(set_to_none=True)
    share = 1.0 / len(forget)
    parts = [
        run(lambda e, f=f, r=r: _window_grads(e, state, f, r, cfg, control, share)) for f, r in zip(forget, retain)
    ]
    with torch.inference_mode(False):
        state.opt.step()  # the delta only: the model's weights are not touched, no lock needed
    state.step += 1
    fl = sum(p[0] for p in parts) * share
    rl = sum(p[1] for p in parts) * share
    rec = {"step": state.step, "forget_loss": fl, "retain_loss": rl, "loss": fl + cfg.alpha * rl}
    state.history.append(rec)
    return rec


def _save_checkpoint(path: Path, state: TrainState) -> None:
    CK.save(path, state.delta, state.opt, {"step": state.step, "seconds": state.seconds, "history": state.history})


def _load_checkpoint(path: Path, model, cfg: RMUConfig) -> TrainState:
    state = new_state(model, cfg)
    meta = CK.load(path, state.delta, state.opt)
    state.step, state.seconds, state.history = int(meta["step"]), float(meta["seconds"]), meta["history"]
    return state


def spec_of(engine, name: str, target, cfg: RMUConfig, data: RMUData) -> dict:
    return {
        "name": name,
        "model": engine.model_name,
        "namespace": engine.cache_namespace(),
        "target": target.name,
        "forget_corpus": data.forget_corpus,
        "retain_corpora": data.retain_corpora,
        "config": cfg.to_dict(),
        "data_digest": data.digest(),
        "n_forget_windows": len(data.forget),
        "n_retain_windows": len(data.retain),
        "params": param_names(cfg.update_layers),
    }


def train(
    engine,
    name: str,
    target,
    cfg: RMUConfig,
    *,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    run_step: Callable[[Callable], object] | None = None,
    fresh: bool = False,
) -> dict:
    """Train (or resume) run ``name`` and return its card. ``run_step(fn)`` runs ``fn(engine)``
    (the server passes one that holds the model lock); ``should_stop()`` returning a reason stops
    with ``RMUCancelled`` after the current step, a checkpoint written ("cancel" also marks the run
    cancelled; another reason leaves it to resume); ``progress`` gets each step's
    record with ``eta_s``. A finished run of the same spec is returned as it is."""
    if engine.variant:
        raise RMUError("RMU trains on the base model; leave the model variant first")
    cfg = cfg.resolved(engine.model.cfg.n_layers)
    folder = run_dir(engine.settings.cache_dir, name)
    run = run_step or (lambda fn: fn(engine))
    data = run(lambda e: target_data(e, target, cfg))
    spec = spec_of(engine, name, target, cfg, data)
    old = C.read_json(folder / "spec.json")
    if old is not None and (
        fresh or {k: v for k, v in old.items() if k != "created"} != {k: v for k, v in spec.items() if k != "created"}
    ):
        if not fresh and (folder / "card.json").exists():
            raise RMUError(
                f"an RMU run named {name!r} already exists with other settings; choose another name or delete it"
            )
        for f in ("checkpoint.safetensors", "delta.safetensors", "card.json", "status.json"):
            (folder / f).unlink(missing_ok=True)
    if (folder / "card.json").exists():
        return json.loads((folder / "card.json").read_text())
    C.atomic_write_json(folder / "spec.json", {**spec, "created": time.time()})
    (folder / "status.json").unlink(missing_ok=True)
    ckpt = folder / "checkpoint.safetensors"
    state = run(lambda e: _load_checkpoint(ckpt, e.model, cfg)) if ckpt.exists() else new_state(engine.model, cfg)
    control = control_vector(engine.model.cfg.d_model, cfg.seed, cfg.steering_coeff)
    resumed_at, t_run = state.step, time.time()
    while state.step < cfg.steps:
        why = should_stop() if should_stop else None
        if why:  # "cancel": marked cancelled; anything else (a server stopping): left to resume
            _save_checkpoint(ckpt, state)
            if why == "cancel":
                C.atomic_write_json(folder / "status.json", {"status": "cancelled", "step": state.step})
            raise RMUCancelled(f"RMU run {name!r} stopped at step {state.step} ({why})")
        t0 = time.time()
        rec = train_step(engine, state, data, cfg, control, run)
        state.seconds += time.time() - t0
        done_here = state.step - resumed_at
        rate = (time.time() - t_run) / done_here
        rec = {**rec, "steps": cfg.steps, "eta_s": rate * (cfg.steps - state.step), "resumed_at": resumed_at}
        if progress:
            progress(rec)
        if state.step % CHECKPOINT_EVERY == 0 or state.step == cfg.steps:
            _save_checkpoint(ckpt, state)
    return _finish(folder, engine, spec, state)


def _finish(folder: Path, engine, spec: dict, state: TrainState) -> dict:
    return V.finish_run(folder, spec, state, "rmu")


# ------------------------------------------------------------------------------------ variants


def variant_name(variant: str) -> str:
    if not variant.startswith(PREFIX):
        raise RMUError(f"model variant {variant!r}: use 'base' or 'rmu:<name>'")
    return check_name(variant[len(PREFIX) :])


def list_runs(cache_dir: str | Path) -> list[dict]:
    """Every RMU run under the cache directory: finished ones (their card) and unfinished ones."""
    return V.list_runs(cache_dir, "rmu")


def load_delta(cache_dir: str | Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The saved delta of a finished RMU run and its card (``variants.load``)."""
    return V.load(cache_dir, PREFIX + check_name(name))
