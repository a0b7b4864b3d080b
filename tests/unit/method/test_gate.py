"""The gated modes (a DSG-style gate in front of the clamp) against an independent computation,
on the tiny model: the decision at rho just above and below tau, padding left out of rho,
generation following the prompt's decision, the fast path, and the percentile calibration."""

import pytest
import torch
from cli_helpers import tiny_sweep_args
from model_helpers import active_features, manual_clamp, manual_codes, run

from unlearn_core.method.interventions import HookState, Intervention, special_ids
from unlearn_core.model.forward import tokenize
from unlearn_core.model.tiny import TINY_HOOK

TEXT = "The mitochondria is the powerhouse of the cell."


def manual_rho(tiny, feats, tokens: list[int], x: torch.Tensor) -> float:
    """rho written out: positions that are not BOS/EOS/pad, where any selected code (float64) > 0."""
    f = manual_codes(tiny.saes["tiny"].sae, x)[0]
    special = set(special_ids(tiny.model.tokenizer))
    counted = [i for i, t in enumerate(tokens) if t not in special and i > 0]
    fires = [i for i in counted if bool((f[i, list(feats)] > 0).any())]
    return len(fires) / len(counted)


def partial_features(tiny):
    """Features whose rho on TEXT is strictly between 0 and 1 (so both sides of tau exist)."""
    feats = tuple(active_features(tiny, k=1))  # a random SAE's features fire densely: one is partial
    x, _ = run(tiny, None, TEXT)
    rho = manual_rho(tiny, feats, tiny.model.to_tokens(TEXT)[0].tolist(), x)
    assert 0 < rho < 1
    return feats, rho, x


@pytest.mark.parametrize("mode", ["gated", "dsg"])
def test_gate_decides_just_above_and_just_below_tau(tiny, mode):
    feats, rho, x = partial_features(tiny)
    sae = tiny.saes["tiny"].sae
    # rho > tau: open, the static clamp (or DSG's) exactly
    _, out = run(tiny, [Intervention("tiny", feats, 30.0, mode, gate=rho - 1e-4)], TEXT)
    expected = (
        manual_clamp(sae, x, feats, 30.0, "clamp") if mode == "gated" else manual_clamp(sae, x, feats, 30.0, "dsg")
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert (out - x).abs().max() > 1e-3
    _, static = run(tiny, [Intervention("tiny", feats, 30.0)], TEXT)  # one feature: DSG's clamp is the static one
    torch.testing.assert_close(out, static, atol=0, rtol=0)
    # rho == tau is not > tau: shut, the input exactly
    _, out = run(tiny, [Intervention("tiny", feats, 30.0, mode, gate=rho)], TEXT)
    torch.testing.assert_close(out, x, atol=0, rtol=0)
    _, out = run(tiny, [Intervention("tiny", feats, 30.0, mode, gate=rho + 1e-4)], TEXT)
    torch.testing.assert_close(out, x, atol=0, rtol=0)


def test_dsg_sets_every_selected_feature_where_any_fires(tiny):
    feats = tuple(active_features(tiny, k=2))
    x, out = run(tiny, [Intervention("tiny", feats, 30.0, "dsg", gate=0.0)], TEXT)
    torch.testing.assert_close(out, manual_clamp(tiny.saes["tiny"].sae, x, feats, 30.0, "dsg"), atol=1e-5, rtol=1e-5)
    _, static = run(tiny, [Intervention("tiny", feats, 30.0)], TEXT)
    assert (out - static).abs().max() > 1e-3  # where one feature is quiet and the other fires


def test_padding_is_left_out_of_rho(tiny):
    """A short row padded in a batch gets the rho and decision it gets alone; counting its pads
    would have given another rho."""
    feats, rho, _ = partial_features(tiny)
    long = TEXT + " And so it goes on, on and on."
    tokens, lens = tokenize(tiny.model, [long, TEXT])
    assert int(lens[1]) < tokens.shape[1]  # row 1 is padded
    state = HookState()
    iv = Intervention("tiny", feats, 30.0, "gated", gate=rho - 1e-4)
    with torch.no_grad(), tiny.model.hooks(fwd_hooks=tiny.hooks([iv], state)):
        tiny.model(tokens)
    assert float(state.rho[0][1]) == pytest.approx(rho, abs=1e-6)
    assert bool(state.open[0][1])
    x_pad = tiny.model.run_with_cache(tokens, names_filter=[TINY_HOOK])[1][TINY_HOOK][1:2]
    f = manual_codes(tiny.saes["tiny"].sae, x_pad)[0]
    n = int(lens[1])
    with_pads = sum(bool((f[i, list(feats)] > 0).any()) for i in range(1, tokens.shape[1])) / (tokens.shape[1] - 1)
    assert with_pads != pytest.approx(sum(bool((f[i, list(feats)] > 0).any()) for i in range(1, n)) / (n - 1))


def test_generation_follows_the_prompts_decision(tiny):
    """Shut on the prompt: every generated token is left alone (the clean text), even where the
    features fire on it; open: the static clamp's text. A per-token gate would differ."""
    from unlearn_core.evaluation.metrics import Generation, generate

    feats = tuple(active_features(tiny, k=1))
    prompt = "Cells divide by"
    toks = tiny.model.to_tokens(prompt)[0].tolist()
    x = tiny.model.run_with_cache(prompt, names_filter=[TINY_HOOK])[1][TINY_HOOK]
    rho = manual_rho(tiny, feats, toks, x)
    clean = generate(tiny, prompt, None, max_new_tokens=12)
    static = generate(tiny, prompt, [Intervention("tiny", feats, 25.0)], max_new_tokens=12)
    assert static != clean
    assert 0 < rho < 1
    shut = [Intervention("tiny", feats, 25.0, "gated", gate=rho)]
    opened = [Intervention("tiny", feats, 25.0, "gated", gate=rho - 1e-4)]
    assert generate(tiny, prompt, shut, max_new_tokens=12) == clean
    assert generate(tiny, prompt, opened, max_new_tokens=12) == static
    g = Generation(tiny, prompt, shut, max_new_tokens=12)  # the server's step-by-step generation
    while not g.done:
        g.step(tiny)
    assert g.text() == clean


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
@pytest.mark.parametrize("mode", ["gated", "dsg"])
def test_fast_path_equals_straightforward(tiny, scoring, mode, shared_data):
    """score_curve / score_configs with gates that open on some questions and not others equal
    the hooked forward (which uses the hook's own rho), and a shut gate gives the clean scores."""
    from unlearn_core.evaluation.mcq import score_questions
    from unlearn_core.method import fastpath
    from unlearn_core.method.gate import question_rhos
    from unlearn_core.server.access import load_question_set
    from unlearn_core.server.steps import fits_context

    qs = [
        q for q in load_question_set("mmlu:high_school_geography", str(shared_data)).questions if fits_context(tiny, q)
    ][:6]
    feats = tuple(active_features(tiny, k=1 if mode == "gated" else 2))
    probe = Intervention("tiny", feats, 40.0, mode, gate=0.0)
    rhos = question_rhos(tiny, qs, probe, scoring, "plain")
    tau = sorted(rhos)[len(rhos) // 2]  # about half open
    assert any(r > tau for r in rhos) and any(r <= tau for r in rhos)
    for q, r in zip(qs, rhos):
        ivs = [Intervention("tiny", feats, v, mode, gate=tau) for v in (10.0, 40.0)]
        slow = [score_questions(tiny, [q], [iv], scoring, "plain")[0] for iv in ivs]
        fast = fastpath.score_curve(tiny, q, ivs[:1], [10.0, 40.0], scoring, "plain")
        both = fastpath.score_configs(tiny, q, ivs, scoring, "plain")
        for a, b, c in zip(slow, fast, both):
            assert a.probs == pytest.approx(b.probs, abs=1e-4) and a.probs == pytest.approx(c.probs, abs=1e-4)
        if r <= tau:  # shut: the clean scores exactly
            clean = score_questions(tiny, [q], None, scoring, "plain")[0]
            assert slow[1].probs == pytest.approx(clean.probs, abs=1e-6)
            assert fast[1].probs == pytest.approx(clean.probs, abs=1e-6)


def test_percentile_calibration_on_a_hand_made_distribution(tiny, monkeypatch):
    from unlearn_core.method import gate
    from unlearn_core.method.gate import calibrate, percentile_tau

    rhos = [i / 100 for i in range(101)]  # 0.00 .. 1.00
    assert percentile_tau(rhos, 95) == pytest.approx(0.95)
    assert percentile_tau(rhos, 50) == pytest.approx(0.50)
    assert percentile_tau([0.1, 0.3], 50) == pytest.approx(0.2)  # linear between the two
    for bad in (-1, 101, float("nan")):
        with pytest.raises(ValueError):
            percentile_tau(rhos, bad)
    feats = tuple(active_features(tiny, k=2))
    a = calibrate(tiny, "tiny", feats, "webtext", 95, n_tokens=600)
    assert a.n_windows >= 4 and a.tau == pytest.approx(percentile_tau(a.rhos, 95))
    assert a.open_fraction <= 0.05 + 1 / a.n_windows
    monkeypatch.setattr(gate, "rho_of_tokens", lambda *a, **k: pytest.fail("the calibration was not cached"))
    b = calibrate(tiny, "tiny", feats, "webtext", 50, n_tokens=600)  # the rhos come from the cache
    assert b.rhos == a.rhos and b.tau <= a.tau


def test_gate_validation():
    with pytest.raises(ValueError, match="needs a gate"):
        Intervention("tiny", (1,), 5.0, "gated")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            Intervention("tiny", (1,), 5.0, "dsg", gate=bad)
    with pytest.raises(ValueError, match="only for the gated modes"):
        Intervention("tiny", (1,), 5.0, "clamp", gate=0.5)


def test_filler_pads_the_question_text(tiny):
    """The probe's filler: n tokens of benign text, before or after the question stem (the
    choices and the answer untouched), under a new id."""
    from unlearn_core.data.loaders import Question
    from unlearn_core.evaluation.experiments.gate import filler_text, padded

    text = filler_text(tiny, 40)
    assert 30 <= len(tiny.model.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 45
    q = Question("q1", "What is it?", ("a", "b", "c", "d"), 2, "s", "t")
    pre, post = padded(q, text, "prepend"), padded(q, text, "append")
    assert pre.question.startswith(text) and pre.question.endswith("What is it?")
    assert post.question.startswith("What is it?") and post.question.endswith(text)
    assert pre.choices == q.choices and pre.answer == 2 and pre.id != q.id != post.id
    assert padded(q, "", "prepend") is q


def test_cli_sweep_runs_modes_side_by_side_and_refuses_a_gate_without_tau(tmp_path, capsys, shared_data):
    from unlearn_core.cli import main

    common = [
        *tiny_sweep_args(n="2", clamps="10,50", limit=3, loss_tokens=0),
        "--side-set",
        "mmlu:high_school_geography",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main([*common, "--mode", "gated", "--out", str(tmp_path / "a")]) == 2
    assert "need exactly one of gate (tau) or gate_percentile" in capsys.readouterr().err
    assert main([*common, "--mode", "clamp", "--gate", "0.3", "--out", str(tmp_path / "b")]) == 2
    assert "for the gated modes" in capsys.readouterr().err
    assert main([*common, "--modes", "clamp,gated", "--gate", "0.3", "--out", str(tmp_path / "c"), "--json"]) == 0
    import json

    rows = json.loads((tmp_path / "c" / "results.json").read_text())["results"]
    assert {r["config"] for r in rows} == {"none"} | {
        f"t=0.5|n=2|c={v}|{m}" for v in (10, 50) for m in ("clamp", "gated")
    }
    gated = [r for r in rows if r["mode"] == "gated"]
    assert all(r["gate_tau"] == 0.3 and r["gate open: forget"] is not None for r in gated)


def test_probe_figure_has_both_panels():
    from unlearn_core.ui.figures import probe_figure

    rows = [
        {
            "where": w,
            "filler_tokens": n,
            "clean": 1.0,
            "static": 0.7,
            "gated": 0.8 if n < 64 else 1.0,
            "gate_open": 0.9 if n < 64 else 0.0,
        }
        for w in ("prepend", "append")
        for n in (0, 16, 64)
    ]
    fig = probe_figure(rows, "t")
    assert len(fig.data) == 8 and {t.name for t in fig.data} >= {"gated clamp accuracy", "gate open (share)"}
    gated = [t for t in fig.data if t.name == "gated clamp accuracy"]
    assert list(gated[0].x) == [0, 16, 64] and list(gated[0].y) == [0.8, 0.8, 1.0]


def test_gates_on_two_saes_in_one_request(tiny):
    """Each gated intervention has its own gate (its own features and tau) at its own hook."""
    from unlearn_core.model.engine import engine_from_parts
    from unlearn_core.model.tiny import tiny_sae

    s2 = tiny_sae(seed=7, hook_name="blocks.1.hook_resid_post", key="tiny-l1")
    eng = engine_from_parts(tiny.model, [tiny.saes["tiny"], s2])
    feats, rho, _ = partial_features(tiny)
    ivs = [
        Intervention("tiny", feats, 30.0, "gated", gate=rho - 1e-4),  # open
        Intervention("tiny-l1", (1,), 30.0, "gated", gate=1.0),
    ]  # never open (rho <= 1)
    state = HookState()
    toks = tiny.model.to_tokens(TEXT)
    with torch.no_grad(), tiny.model.hooks(fwd_hooks=eng.hooks(ivs, state)):
        both = tiny.model(toks)
    with torch.no_grad(), tiny.model.hooks(fwd_hooks=eng.hooks(ivs[:1])):
        first = tiny.model(toks)
    assert set(state.open) == {0, 1} and bool(state.open[0][0]) and not bool(state.open[1][0])
    torch.testing.assert_close(both, first, atol=0, rtol=0)  # the shut second gate changes nothing
    assert float(state.rho[0][0]) == pytest.approx(rho, abs=1e-6)
