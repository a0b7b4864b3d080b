"""The persistent SAE-guided method on the tiny backend: the forget term lowers the selected
features (read by SAELens's own encoder, not the training code's), the retain term keeps a held-out
residual, the no-op control changes nothing, a resumed run equals an uninterrupted one, and the
finished run is a model variant ``persist:<name>``."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from unlearn_core.evaluation.targets import Target
from unlearn_core.model.tiny import ALWAYS_FIRES, TINY_HOOK, tiny_engine
from unlearn_core.training import persist as P
from unlearn_core.training import variants as V

CFG = P.PersistConfig(
    update_layers=(0,),
    retain_layers=(),
    forget_weight=1.0,
    retain_weight=1.0,
    lm_weight=0.0,
    margin=0.0,
    lr=1e-2,
    batch_size=2,
    steps=10,
    ctx=32,
    seed=0,
)


@pytest.fixture
def engine(tmp_path, shared_data):
    return tiny_engine(cache_dir=str(tmp_path))


def _text(rng, chars: str) -> str:
    return "\n\n".join(" ".join("".join(rng.choice(chars) for _ in range(5)) for _ in range(60)) for _ in range(20))


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """Forget text of digits, retain text of letters (and a held-out letter text no run trains on)."""
    d = tmp_path_factory.mktemp("toy_persist")
    rng = random.Random(0)
    (d / "forget.txt").write_text(_text(rng, "0123456789+-*/="))
    (d / "retain.txt").write_text(_text(rng, "abcdefghijklmnopqrstuvwxyz"))
    (d / "heldout.txt").write_text(_text(rng, "abcdefghijklmnopqrstuvwxyz "))
    return Target("toy", "toy", str(d / "forget.txt"), "quiz:bio", (str(d / "retain.txt"),), ("quiz:retain",))


def features_firing(engine, target, n: int = 4) -> tuple[int, ...]:
    """The ``n`` features (not the always-on one) that fire most on the forget text."""
    acts = sae_acts(engine, forget_windows(engine, target))
    order = (acts > 0).float().mean((0, 1)).argsort(descending=True).tolist()
    return tuple(f for f in order if f != ALWAYS_FIRES)[:n]


def forget_windows(engine, target, ctx: int = 32) -> list[list[int]]:
    from unlearn_core.training.rmu import full_windows

    return full_windows(engine, target.forget_corpus, 8 * ctx, ctx)[:8]


def held_out_windows(engine, target, ctx: int = 32) -> list[list[int]]:
    from unlearn_core.training.rmu import full_windows

    path = target.forget_corpus.replace("forget.txt", "heldout.txt")
    return full_windows(engine, path, 8 * ctx, ctx)[:8]


def resid_and_acts(engine, windows):
    """An independent reading: the residual at the SAE's hook of the whole model (run_with_hooks,
    with whatever weights the model has now) and SAELens's own ``encode`` of it."""
    got = {}
    hook = (TINY_HOOK, lambda x, hook: got.__setitem__("x", x.detach().clone()))
    with torch.no_grad():
        engine.model.run_with_hooks(torch.tensor(windows), fwd_hooks=[hook])
        sae = engine.saes[engine.default_sae].sae
        return got["x"][:, 1:], sae.encode(got["x"][:, 1:])


def sae_acts(engine, windows):
    return resid_and_acts(engine, windows)[1]


def test_forget_term_lowers_the_selected_features(engine, target):
    feats = features_firing(engine, target)
    cfg = replace(CFG, features=feats)
    before = sae_acts(engine, forget_windows(engine, target))[..., list(feats)]
    P.train(engine, "f", target, cfg)
    with V.applied(engine, "persist:f"):
        after = sae_acts(engine, forget_windows(engine, target))[..., list(feats)]
    assert before.sum() > 0
    assert after.sum() < 0.2 * before.sum()  # most of the selected activation is gone
    others = [f for f in range(engine.saes[engine.default_sae].d_sae) if f not in feats]
    base_other = sae_acts(engine, forget_windows(engine, target))[..., others]
    with V.applied(engine, "persist:f"):
        now_other = sae_acts(engine, forget_windows(engine, target))[..., others]
    assert now_other.sum() > 0.3 * base_other.sum()  # not by silencing the SAE as a whole


def test_forget_term_equals_an_independent_computation(engine, target):
    """The training code's pre-activations equal SAELens's hook_sae_acts_pre, and its firing mask
    equals encode() > 0; the forget term at a zero delta is 1 (everything left)."""
    feats = features_firing(engine, target)
    cfg = replace(CFG, features=feats).resolved(2, 0)
    sae = engine.saes[engine.default_sae].sae
    x, acts = resid_and_acts(engine, forget_windows(engine, target)[:2])
    seen = {}
    sae.hook_sae_acts_pre.add_hook(lambda t, hook: seen.__setitem__("pre", t.detach().clone()))
    try:
        with torch.no_grad():
            sae.encode(x)
    finally:
        sae.hook_sae_acts_pre.remove_hooks()
    assert torch.allclose(P.pre_acts(sae, x, feats), seen["pre"][..., list(feats)], atol=1e-5)
    assert torch.equal(P.firing(sae, x, feats), acts[..., list(feats)] > 0)
    w = forget_windows(engine, target)
    delta = {k: torch.zeros_like(v) for k, v in engine.model.named_parameters() if k in P.param_names((0,))}
    with torch.no_grad():
        terms = P.window_terms(engine, P.select(engine, target, cfg), cfg, delta, w[0], w[1])
    assert float(terms["forget"]) == pytest.approx(1.0)
    assert float(terms["retain"]) == 0.0 and float(terms["lm"]) == 0.0


def test_retain_term_keeps_a_held_out_residual(engine, target):
    feats = features_firing(engine, target)
    held = held_out_windows(engine, target)
    x0, _ = resid_and_acts(engine, held)
    change = {}
    for name, w in (("kept", 50.0), ("free", 0.0)):
        P.train(engine, name, target, replace(CFG, features=feats, retain_weight=w, lm_weight=0.1 * bool(w)))
        with V.applied(engine, f"persist:{name}"):
            x, _ = resid_and_acts(engine, held)
        change[name] = float((x - x0).norm() / x0.norm())
    assert change["kept"] < 0.1  # within tolerance on text no run trained on (0.078 measured)
    assert change["kept"] < 0.2 * change["free"]  # and it is the retain term that keeps it (free: 1.19)


def test_no_op_control_equals_the_clean_model(engine, target):
    feats = features_firing(engine, target)
    tokens = torch.tensor(forget_windows(engine, target)[:2])
    with torch.no_grad():
        clean = engine.model(tokens)
    card = P.train(engine, "zero", target, replace(CFG, features=feats, forget_weight=0.0, lm_weight=0.5))
    assert all(v == 0.0 for v in card["delta_norms"].values())
    with V.applied(engine, "persist:zero"), torch.no_grad():
        assert (engine.model(tokens) - clean).abs().max() <= 1e-4
    P.train(engine, "lr0", target, replace(CFG, features=feats, lr=0.0))
    with V.applied(engine, "persist:lr0"), torch.no_grad():
        assert (engine.model(tokens) - clean).abs().max() <= 1e-4


def test_resumed_run_equals_an_uninterrupted_one(engine, target):
    cfg = replace(CFG, features=features_firing(engine, target), lm_weight=0.1, steps=12)
    steps = []
    with pytest.raises(P.PersistCancelled):
        P.train(
            engine,
            "r",
            target,
            cfg,
            progress=lambda rec: steps.append(rec["step"]),
            should_stop=lambda: "stop" if len(steps) >= 5 else None,
        )
    folder = P.run_dir(engine.settings.cache_dir, "r")
    assert (folder / "checkpoint.safetensors").exists() and not (folder / "card.json").exists()
    card = P.train(engine, "r", target, cfg, progress=lambda rec: steps.append(rec["step"]))
    assert steps == list(range(1, cfg.steps + 1)) and card["steps_done"] == cfg.steps
    P.train(engine, "s", target, cfg)
    a, _ = V.load(engine.settings.cache_dir, "persist:r")
    b, _ = V.load(engine.settings.cache_dir, "persist:s")
    assert all(torch.allclose(a[k], b[k], atol=1e-7, rtol=0) for k in a)
    with pytest.raises(P.PersistCancelled):
        P.train(engine, "c", target, cfg, should_stop=lambda: "cancel")
    assert {r["name"]: r["status"] for r in P.list_runs(engine.settings.cache_dir)}["c"] == "cancelled"


def test_variant_applies_its_delta_and_restores_the_weights(engine, target):
    cfg = replace(CFG, features=features_firing(engine, target))
    P.train(engine, "v", target, cfg)
    delta, card = V.load(engine.settings.cache_dir, "persist:v")
    assert set(delta) == {"blocks.0.mlp.W_out"} and card["kind"] == "persist"
    w = engine.model.blocks[0].mlp.W_out.detach().clone()
    with V.applied(engine, "persist:v") as e:
        assert torch.equal(e.model.blocks[0].mlp.W_out, w + delta["blocks.0.mlp.W_out"])
        assert e.variant.startswith("persist:v@")
    assert torch.equal(engine.model.blocks[0].mlp.W_out, w) and engine.variant == ""
    assert "persist:v" in V.finished(engine.settings.cache_dir)


def test_bad_settings_and_names(engine, target):
    with pytest.raises(P.PersistError, match="update_layers"):
        replace(CFG, update_layers=(1,)).resolved(2, 0)
    with pytest.raises(P.PersistError, match="margin"):
        replace(CFG, margin=-1.0).resolved(2, 0)
    with pytest.raises(P.PersistError, match="not features of SAE"):
        P.train(engine, "bad", target, replace(CFG, features=(10**6,)))
    with pytest.raises(P.PersistError, match="run name"):
        P.run_dir(engine.settings.cache_dir, "../x")
    with pytest.raises(V.VariantError, match="not found"):
        with V.applied(engine, "persist:nothing"):
            pass
    with pytest.raises(V.VariantError, match="use 'base'"):
        V.parse("sft:x")
    P.train(engine, "dup", target, replace(CFG, features=(2, 3)))
    with pytest.raises(P.PersistError, match="already exists with other settings"):
        P.train(engine, "dup", target, replace(CFG, features=(2, 3), margin=1.0))


def test_defaults_come_from_the_registry(engine):
    cfg = P.default_config("tiny", steps=3)
    assert cfg.steps == 3 and cfg.lr == P.default_config("tiny").lr
    assert P.default_config("no-such-model").retain_weight == P.default_config("no-such-model-2").retain_weight
    assert P.checked_config(engine, {}).update_layers == (0,)
