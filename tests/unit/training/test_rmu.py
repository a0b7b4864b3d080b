"""RMU on the tiny backend: what the training does to forget and retain activations, that only the
chosen weights change, that the saved delta reloads exactly, resume, the no-op control, and clear
errors for bad hyperparameters (CLI)."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from cli_helpers import run_cli, tiny_sweep_args

from unlearn_core.evaluation.targets import Target
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.training import rmu

CFG = rmu.RMUConfig(
    layer=1, update_layers=(0, 1), steering_coeff=20.0, alpha=10.0, lr=1e-2, batch_size=4, steps=12, ctx=32, seed=0
)


@pytest.fixture
def engine(tmp_path, shared_data):
    return tiny_engine(cache_dir=str(tmp_path))


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """Forget text of digits and operators, retain text of letters: a character-level random model
    can tell them apart, as a real model tells a topic from general text."""
    d = tmp_path_factory.mktemp("toy_target")
    rng = random.Random(0)

    def text(chars: str) -> str:
        return "\n\n".join(" ".join("".join(rng.choice(chars) for _ in range(5)) for _ in range(60)) for _ in range(20))

    (d / "forget.txt").write_text(text("0123456789+-*/="))
    (d / "retain.txt").write_text(text("abcdefghijklmnopqrstuvwxyz"))
    return Target("toy", "toy", str(d / "forget.txt"), "quiz:bio", (str(d / "retain.txt"),), ("quiz:retain",))


def resid(engine, windows, weights=None):
    """An independent computation of the steered residual: a hook on blocks.<layer>.hook_resid_post
    of the whole model, with W_out + delta written into a copy of the weights."""
    model = engine.model
    got = {}
    hook = (f"blocks.{CFG.layer}.hook_resid_post", lambda x, hook: got.__setitem__("x", x.detach().clone()))
    params = dict(model.named_parameters())
    saved = {k: params[k].detach().clone() for k in (weights or {})}
    try:
        with torch.no_grad():
            for k, v in (weights or {}).items():
                params[k].copy_(v)
            model.run_with_hooks(torch.tensor(windows), fwd_hooks=[hook])
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)
    return got["x"][:, 1:]


def test_steps_move_forget_toward_control_and_keep_retain(engine, target):
    cfg = CFG.resolved(engine.model.cfg.n_layers)
    data = rmu.target_data(engine, target, cfg)
    forget, retain = data.forget[:8], data.retain[:8]
    control = rmu.control_vector(engine.model.cfg.d_model, cfg.seed, cfg.steering_coeff)
    f0, r0 = resid(engine, forget), resid(engine, retain)
    state = rmu.new_state(engine.model, cfg)
    for _ in range(cfg.steps):
        rmu.train_step(engine, state, data, cfg, control)
    params = dict(engine.model.named_parameters())
    w = {k: params[k].detach() + d.detach() for k, d in state.delta.items()}
    f1, r1 = resid(engine, forget, w), resid(engine, retain, w)
    to_control = lambda f: float(((f - control) ** 2).mean())  # noqa: E731
    assert to_control(f1) < 0.8 * to_control(f0), (to_control(f0), to_control(f1))  # toward c*u
    forget_shift = float(((f1 - f0) ** 2).mean())
    retain_shift = float(((r1 - r0) ** 2).mean())
    assert retain_shift < 0.1 * forget_shift, (retain_shift, forget_shift)  # retain stays near frozen
    assert retain_shift < 0.1 * float((r0**2).mean())


def params_now(engine) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in engine.model.named_parameters()}


def test_only_chosen_weights_change_and_saved_delta_reloads_exactly(engine, target):
    before = params_now(engine)
    card = rmu.train(engine, "t", target, CFG)
    assert card["params"] == ["blocks.0.mlp.W_out", "blocks.1.mlp.W_out"] and card["steps_done"] == CFG.steps
    assert all(torch.equal(v, before[k]) for k, v in params_now(engine).items())  # training left the model alone
    delta, _ = rmu.load_delta(engine.settings.cache_dir, "t")
    toks = torch.tensor([rmu.full_windows(engine, "quiz:bio@heldout", 200, 32)[0]])
    base = engine.model(toks).detach()
    # independent: the weights written by hand, then the same forward
    expected = resid(engine, toks.tolist(), {k: before[k] + delta[k] for k in delta})
    with rmu.applied(engine, "rmu:t") as e:
        during = params_now(e)
        assert e.cache_namespace().startswith("tiny|float32|rmu:t@")
        logits = e.model(toks).detach()
        assert torch.equal(resid(e, toks.tolist()), expected)
    changed = {k for k in before if not torch.equal(during[k], before[k])}
    assert changed == set(card["params"])
    assert all(torch.equal(during[k], before[k] + delta[k]) for k in changed)
    assert not torch.allclose(logits, base)
    assert all(torch.equal(v, before[k]) for k, v in params_now(engine).items())  # restored bit for bit
    assert engine.cache_namespace() == "tiny|float32"
    with rmu.applied(engine, "rmu:t") as e:  # reloaded from disk: the same logits
        rmu._LOADED.clear()
        assert torch.equal(e.model(toks).detach(), logits)


def test_coefficient_zero_leaves_the_model_as_it_was(engine, target):
    card = rmu.train(engine, "zero", target, replace(CFG, steering_coeff=0.0, alpha=100.0))
    delta, _ = rmu.load_delta(engine.settings.cache_dir, "zero")
    assert all(float(v.abs().max()) == 0.0 for v in delta.values()), card["delta_norms"]
    toks = torch.tensor([rmu.full_windows(engine, "wikitext@heldout", 200, 32)[0]])
    base = engine.model(toks).detach()
    with rmu.applied(engine, "rmu:zero"):
        out = engine.model(toks).detach()
    assert (out - base).abs().max() <= 1e-4


def test_resumed_run_equals_an_uninterrupted_one(engine, target, tmp_path):
    steps = []
    with pytest.raises(rmu.RMUCancelled):
        rmu.train(
            engine,
            "r",
            target,
            CFG,
            progress=lambda rec: steps.append(rec["step"]),
            should_stop=lambda: "stop" if len(steps) >= 5 else None,
        )
    folder = rmu.run_dir(engine.settings.cache_dir, "r")
    assert (folder / "checkpoint.safetensors").exists() and not (folder / "card.json").exists()
    assert not (folder / "status.json").exists()  # a stop (not a cancel) stays resumable
    card = rmu.train(engine, "r", target, CFG, progress=lambda rec: steps.append(rec["step"]))
    assert steps == list(range(1, CFG.steps + 1)) and card["steps_done"] == CFG.steps
    assert [h["step"] for h in card["history"]] == list(range(1, CFG.steps + 1))
    straight = rmu.train(engine, "s", target, CFG)
    a, _ = rmu.load_delta(engine.settings.cache_dir, "r")
    b, _ = rmu.load_delta(engine.settings.cache_dir, "s")
    assert all(torch.allclose(a[k], b[k], atol=1e-7, rtol=0) for k in a)
    assert [h["loss"] for h in card["history"]] == pytest.approx([h["loss"] for h in straight["history"]], rel=1e-5)
    with pytest.raises(rmu.RMUCancelled):
        rmu.train(engine, "c", target, CFG, should_stop=lambda: "cancel")
    assert rmu.list_runs(engine.settings.cache_dir)[0]["status"] == "cancelled"


def test_bad_hyperparameters_and_unknown_runs(engine, target):
    with pytest.raises(rmu.RMUError, match="layer 7 is not a layer of this model"):
        replace(CFG, layer=7).resolved(2)
    with pytest.raises(rmu.RMUError, match="lr = -0.1 is out of range"):
        replace(CFG, lr=-0.1).resolved(2)
    with pytest.raises(rmu.RMUError, match="update_layers"):
        replace(CFG, update_layers=(0, 3)).resolved(2)
    with pytest.raises(rmu.V.VariantError, match="not found"):
        with rmu.applied(engine, "rmu:nothing"):
            pass
    with pytest.raises(rmu.RMUError, match="use 'base' or 'rmu:<name>'"):
        rmu.variant_name("sft:x")
    rmu.train(engine, "dup", target, CFG)
    with pytest.raises(rmu.RMUError, match="already exists with other settings"):
        rmu.train(engine, "dup", target, replace(CFG, alpha=1.0))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "-1"], "lr = -1.0 is out of range"),
        (["--layer", "9"], "layer 9 is not a layer of this model (0..1)"),
        (["--update-layers", "0,5"], "update_layers [5] must be between 0 and the steered layer 1"),
    ],
)
def test_cli_rejects_bad_hyperparameters(tmp_path, args, message, capsys):
    r = run_cli(capsys, "rmu", "train", "--tiny", "--name", "x", "--cache-dir", str(tmp_path), *args)  # in this process
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


# bio-basics as a user target with the same text, but 12 of its held-out questions per side, scored
# by cloze (one pass a question, where the tiny model's letter scoring takes all 24 orderings), and
# a small selection budget: `rmu compare`'s known filter and statistics were most of this test's time
SMALL_TARGET = """
[bio-cloze]
description = "bio-basics, 12 questions a side, cloze scoring, a small selection budget (a quick CLI test)"
forget_corpus = "quiz:bio@train"
forget_questions = "forget.json"
retain_corpora = ["quiz:retain@train", "wikitext@train", "webtext-train"]
retain_questions = ["retain.json"]
loss_corpus = "webtext"
ppl_corpus = "quiz:bio@heldout"
eval_part = "all"
strict_known = true
scoring = "cloze"

[bio-cloze.selection]
threshold = 0.01
n = 50
tokens = 5000

[bio-cloze.intervention]
mode = "clamp"
c = 400.0
"""


def test_cli_trains_lists_and_scores_with_the_variant(tmp_path, capsys, monkeypatch, shared_data):
    """`python -m unlearn_core` for `rmu train` and one `features stats` (the real entry point); the
    other commands in this process (the same exit codes and output, without an interpreter each)."""
    import json

    from unlearn_core.data.loaders import load_question_set

    for name, spec in (("forget", "quiz:bio@heldout"), ("retain", "quiz:retain@heldout")):
        qs = load_question_set(spec, str(shared_data)).questions[:12]
        (tmp_path / f"{name}.json").write_text(json.dumps([q.to_dict() for q in qs]))
    targets = tmp_path / "targets.toml"
    targets.write_text(SMALL_TARGET)
    monkeypatch.setenv("UNLEARN_TARGETS_FILE", str(targets))  # the tiny backend's settings read it (not --targets)
    small = ("--target", "bio-cloze")
    sub = lambda *a: subprocess.run(
        [sys.executable, "-m", "unlearn_core", *a, "--cache-dir", str(tmp_path)],  # noqa: E731
        capture_output=True,
        text=True,
        timeout=900,
    )
    run = lambda *a: run_cli(capsys, *a, "--cache-dir", str(tmp_path))  # noqa: E731
    r = sub("rmu", "train", "--tiny", "--name", "cli", *small)
    assert r.returncode == 0, r.stderr
    assert "rmu:cli: 12 steps" in r.stdout and "ETA" in r.stderr  # the progress bar shows an ETA
    r = run("rmu", "list")
    assert "rmu:cli" in r.stdout and "done" in r.stdout
    r = run(
        "rmu",
        "compare",
        "--tiny",
        "--name",
        "cli",
        "--clamps",
        "20",
        "--ns",
        "2",
        "--loss-tokens",
        "300",
        "--ppl-tokens",
        "200",
        "--json",
        *small,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["method"]: row for row in out["rows"]}
    assert set(rows) == {"clamp", "gated", "dsg", "rmu"} and rows["rmu"]["variant"] == "rmu:cli"
    assert rows["rmu"]["loss_added"] > 0 and rows["rmu"]["ppl"] != out["ppl"]["clean"]  # the delta was applied
    assert out["rmu"]["steps_done"] == 12 and "rmu" in out["scores"]
    for stage in ("known filter (questions)", "scoring forget", "gate open rates", "loss added (configurations)"):
        assert f"rmu compare bio-cloze: {stage}" in r.stderr, stage  # one bar per stage, each with its total
    # the sweep: the RMU model as a row, and (--model-variant) the clamps on top of it
    r = run(
        *tiny_sweep_args(n="2", clamps="20", limit=3, loss_tokens=300),
        "--variants",
        "rmu:cli",
        "--model-variant",
        "rmu:cli",
        "--out",
        str(tmp_path / "sweep"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    sweep = {row["config"]: row for row in json.loads(r.stdout)["results"]}
    assert set(sweep) == {"none", "t=0.5|n=2|c=20", "rmu:cli"}
    assert sweep["none"]["model"] == sweep["t=0.5|n=2|c=20"]["model"] == "rmu:cli" and sweep["rmu:cli"]["mode"] == "rmu"
    assert sweep["none"]["loss_added"] == pytest.approx(sweep["rmu:cli"]["loss_added"], abs=1e-6)
    assert abs(sweep["none"]["loss_added"]) > 1e-4  # the clean row is the RMU model's, not the base model's
    # the feature commands on the RMU model in place of the model as loaded
    stats = [
        runner("features", "stats", "--tiny", "--corpus", "webtext", "--tokens", "200", "--json", *extra)
        for runner, extra in ((run, []), (sub, ["--model-variant", "rmu:cli"]))
    ]
    assert all(s.returncode == 0 for s in stats), stats[1].stderr
    base, on = (json.loads(s.stdout)["webtext"] for s in stats)
    assert base["n_tokens"] == on["n_tokens"] and base["most_frequent"] != on["most_frequent"]
    r = run("features", "stats", "--tiny", "--corpus", "webtext", "--tokens", "200", "--model-variant", "rmu:nope")
    assert r.returncode == 2 and "not found" in r.stderr
