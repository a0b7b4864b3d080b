"""The relearning attack on the tiny model, each claim against a computation of its own: a planted
fact is learnt (log-likelihoods from a plain forward of a hand-patched copy), the T/V split, the
defence's hooks in the training forward (and the gradient through them), the weights restored
bit for bit, an RMU defence's weights as the starting point, the bench's row and the CLI."""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from unlearn_core.attacks import bench as B
from unlearn_core.attacks import relearn as RL
from unlearn_core.attacks.defences import Defence
from unlearn_core.attacks.report import markdown
from unlearn_core.data import loaders as D
from unlearn_core.data.questions import Question
from unlearn_core.evaluation.mcq import score_question, score_questions
from unlearn_core.evaluation.targets import Target
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.training import rmu

FAST = RL.RelearnConfig(
    lrs=(1e-3, 3e-2),
    steps=(0, 2),
    headline_lr=3e-2,
    wikitext_lr=1e-2,
    wikitext_samples=2,
    wikitext_tokens=24,
    wikitext_epochs=1,
)
CLAMP = Intervention("tiny", (2, 3, 4, 5, 6), 30.0)
DSG = Intervention("tiny", (2, 3, 4, 5, 6), 30.0, mode="dsg", gate=0.0)


def params_now(engine) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in engine.model.named_parameters()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def bio(shared_data):
    return D.load_question_set("quiz:bio", str(shared_data)).questions


def choice_logliks(model, q: Question, delta: dict | None = None) -> list[float]:
    """Mean log-likelihood of each choice after "Question: q\\nAnswer:", from a full forward of a
    copy of the model with ``delta`` added to its weights by hand (not the package's scorer)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for k, v in (delta or {}).items():
            dict(m.named_parameters())[k].add_(v.detach())
    tok = model.tokenizer
    prefix = [tok.bos_token_id] + tok(f"Question: {q.question}\nAnswer:", add_special_tokens=False)["input_ids"]
    out = []
    for c in q.choices:
        ans = tok(" " + c.strip(), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(m(torch.tensor([prefix + ans])).float(), -1)[0]
        out.append(float(sum(lp[len(prefix) - 1 + i, t] for i, t in enumerate(ans)) / len(ans)))
    return out


def test_a_clean_model_relearns_a_planted_fact(tiny, bio):
    q = next(q for q in bio if not score_question(tiny, q, scoring="cloze").correct)
    before = choice_logliks(tiny.model, q)
    assert max(range(4), key=before.__getitem__) != q.answer  # planted: the model does not know it
    state = rmu.new_delta(tiny.model, RL.trained_names(tiny.model, RL.DEFAULT), 3e-2)
    rows = RL.fact_rows(tiny.model.tokenizer, [q])
    losses = [RL.train_step(tiny, state, rows, (), gate=False) for _ in range(8)]
    after = choice_logliks(tiny.model, q, state.delta)
    assert max(range(4), key=after.__getitem__) == q.answer, (before, after)
    assert after[q.answer] > before[q.answer] + 1.0
    assert losses[0] == pytest.approx(-before[q.answer], rel=1e-4) and losses[-1] < losses[0]
    hold = RL.holder(tiny, SimpleNamespace(run=None), Defence("none"))
    ctx = RL.Context(tiny, Defence("none"), "cloze", hold, [q], {q.id: False}, [], [], {})
    assert RL.scores_under(ctx, state.delta, [q])[0].correct  # the bench's scorer agrees


def test_the_split_is_disjoint_deterministic_and_covers_every_forgotten_fact(bio):
    facts = bio[:15]
    t, v = RL.split(facts)
    assert not {q.id for q in t} & {q.id for q in v}
    assert {q.id for q in t} | {q.id for q in v} == {q.id for q in facts}
    assert (len(t), len(v)) == (7, 8)
    shuffled = random.Random(1).sample(facts, len(facts))
    t2, v2 = RL.split(shuffled)
    assert {q.id for q in t2} == {q.id for q in t} and [q.id for q in RL.split(facts)[0]] == [q.id for q in t]
    # independent: the lower half of sha256("relearn:<id in its file>")
    h = {q.id: hashlib.sha256(f"relearn:{q.id.split(':', 1)[1]}".encode()).hexdigest() for q in facts}
    assert {q.id for q in t} == set(sorted(h, key=h.get)[:7])
    assert RL.split([]) == ([], []) and RL.split(facts[:1]) == ([], facts[:1])


@pytest.mark.parametrize("iv", [CLAMP, DSG], ids=["clamp", "dsg"])
def test_the_training_forward_is_the_defended_model_and_the_gradient_passes_the_clamp(tiny, bio, iv):
    qs = bio[:4]
    rows = RL.fact_rows(tiny.model.tokenizer, qs)
    zero = rmu.new_delta(tiny.model, RL.trained_names(tiny.model, RL.DEFAULT), 1e-2).delta
    with RL.grad_context(tiny), torch.no_grad():
        hooked = RL.row_losses(tiny, rows, (iv,), zero, gate=True)
        clean = RL.row_losses(tiny, rows, (), zero, gate=True)
    # the scorer's own path (final_resid, the gate on the prompt): -loglik of the right answer
    want = [-s.loglik[q.answer] for q, s in zip(qs, score_questions(tiny, qs, [iv], scoring="cloze"))]
    assert hooked.tolist() == pytest.approx(want, abs=1e-4)
    assert not torch.allclose(hooked, clean)

    def grad(ivs) -> torch.Tensor:  # of blocks.0.mlp.W_out, which lies before the hook point
        state = rmu.new_delta(tiny.model, RL.trained_names(tiny.model, RL.DEFAULT), 1e-2)
        with RL.grad_context(tiny), torch.enable_grad():
            RL.row_losses(tiny, rows, ivs, state.delta, gate=True).mean().backward()
        return state.delta["blocks.0.mlp.W_out"].grad

    g_iv, g_clean = grad((iv,)), grad(())
    assert g_iv.abs().sum() > 0 and not torch.allclose(g_iv, g_clean)
    assert all(p.grad is None for p in tiny.model.parameters())
    assert all(p.grad is None for s in tiny.saes.values() for p in s.sae.parameters())


@pytest.fixture()
def inputs(bio, shared_data):
    retain = D.load_question_set("quiz:retain", str(shared_data)).questions
    return B.Inputs(bio[:6], [], retain[:3], [], "cloze", None)


def test_a_bench_row_restores_the_weights_and_reports_its_curve(tiny, inputs, monkeypatch):
    monkeypatch.setattr(RL, "DEFAULT", FAST)
    before = params_now(tiny)
    assert B.expand(["relearn"]) == [("relearn", v) for v in RL.VARIANTS]
    d = Defence("dsg", (DSG,))
    rows = [B.run_one(tiny, inputs, d, "relearn", v) for v in RL.VARIANTS]
    assert same(params_now(tiny), before)  # restored bit for bit
    facts, wiki = rows
    assert [r["attack"] for r in rows] == ["relearn:facts", "relearn:wikitext"]
    assert all(r["threat"] == "weights" for r in rows)
    defended = B.right(tiny, inputs, d, inputs.forget)
    forgotten = [q.id for q, ok in zip(inputs.forget, defended) if not ok]
    assert len(forgotten) >= 2
    # the split is over the known facts, whatever the defence: T the lower half of the hash order
    t, v = RL.split(inputs.forget)
    assert facts["t_ids"] == [q.id for q in t] and facts["v_ids"] == [q.id for q in v if q.id in forgotten]
    assert facts["n_T"] == len(t) and facts["n_V"] == len(facts["v_ids"]) >= 1
    assert {f["source_id"] for f in facts["facts"]} == {q.id for q in inputs.forget} - set(facts["t_ids"])
    other = B.run_one(tiny, inputs, Defence("clamp", (CLAMP,)), "relearn", "facts")
    assert "skipped" not in other and other["t_ids"] == facts["t_ids"]  # the same T under another defence
    assert facts["n_forgotten"] == facts["n_V"] and wiki["n_forgotten"] == len(forgotten)
    assert [(p["lr"], p["step"]) for p in facts["curve"]] == [(lr, s) for lr in FAST.lrs for s in FAST.steps]
    assert [p["step"] for p in wiki["curve"]] == [0, FAST.wikitext_samples * FAST.wikitext_epochs]
    for p in facts["curve"] + wiki["curve"]:
        assert set(p) == {"lr", "step", "loss", "v_acc", "t_acc", "retain_acc"}
    end = next(p for p in facts["curve"] if p["lr"] == facts["lr"] and p["step"] == 2)
    v_right = [f["defended_attacked"] for f in facts["facts"] if f["source_id"] in facts["v_ids"]]
    assert end["v_acc"] == pytest.approx(sum(v_right) / len(v_right))
    assert facts["n_recovered"] == sum(v_right) and facts["retain_acc"] == end["retain_acc"]
    md = markdown({**B.header(Target("x", "", "", "", (), ()), None, inputs, [d]), "rows": rows, "wall_s": 1.0})
    assert f"relearn:facts (T {facts['n_T']} / V {facts['n_V']}; lr {facts['lr']:g}, step 2)" in md
    assert md.count("| dsg | relearn:") == 2 + len(facts["curve"]) + len(wiki["curve"])  # rows, then curves
    assert "the same split for every defence" in md
    # a row measured before the split changed (no "split" key) is still described by its own split
    old = [{k: v for k, v in x.items() if k != "split"} for x in rows]
    md_old = markdown({**B.header(Target("x", "", "", "", (), ()), None, inputs, [d]), "rows": old, "wall_s": 1.0})
    assert "each defence's own split" in md_old and "the same split for every defence" not in md_old


def test_an_rmu_defence_is_the_starting_point_and_is_removed_after(tmp_path, bio, shared_data):
    engine = tiny_engine(cache_dir=str(tmp_path))
    forget = tmp_path / "forget.txt"
    forget.write_text("\n\n".join("The anthrax bacterium and the plague vaccine. " * 20 for _ in range(10)))
    retain = tmp_path / "retain.txt"
    retain.write_text("\n\n".join("A cat sat on the warm mat by the door. " * 20 for _ in range(10)))
    target = Target("toy", "toy", str(forget), "quiz:bio", (str(retain),), ("quiz:retain",))
    cfg = rmu.RMUConfig(
        layer=1, update_layers=(0, 1), steering_coeff=20.0, alpha=1.0, lr=5e-2, batch_size=1, steps=3, ctx=32
    )
    rmu.train(engine, "r", target, cfg)
    base = params_now(engine)
    d = Defence("rmu:r", (), "rmu:r")
    qs = bio[:3]
    rows = RL.fact_rows(engine.model.tokenizer, qs)
    zero = rmu.new_delta(engine.model, RL.trained_names(engine.model, RL.DEFAULT), 1e-2).delta
    with d.applied(engine), RL.grad_context(engine), torch.no_grad():
        start = RL.row_losses(engine, rows, (), zero, gate=True)
        want = [-s.loglik[q.answer] for q, s in zip(qs, score_questions(engine, qs, scoring="cloze"))]
    with RL.grad_context(engine), torch.no_grad():
        plain = RL.row_losses(engine, rows, (), zero, gate=True)
    assert start.tolist() == pytest.approx(want, abs=1e-4) and not torch.allclose(start, plain)
    inputs = B.Inputs(bio[:8], [], [], [], "cloze", None)
    fast = replace(FAST, lrs=(3e-2,))
    row = RL.run(engine, inputs, d, "facts", lambda dd, q: (B.right(engine, inputs, dd, q), [None] * len(q)), fast)
    assert same(params_now(engine), base) and engine.variant == ""
    assert row["defence"] == "rmu:r" and "skipped" not in row and row["n_T"] >= 1 and len(row["curve"]) == 2


def test_fewer_than_two_forgotten_facts_skip_the_fine_tune(tiny, inputs):
    none = Defence("none")
    inputs = replace(
        inputs, forget=[q for q, ok in zip(inputs.forget, B.right(tiny, inputs, none, inputs.forget)) if ok]
    )
    row = RL.run(tiny, inputs, none, "facts", lambda d, q: (B.right(tiny, inputs, d, q), [0.5] * len(q)), FAST)
    assert len(inputs.forget) == row["n_facts"] > 0
    assert row["n_forgotten"] == 0 and row["recovery_rate"] is None and row["forget_acc_attacked"] is None
    assert "fewer than 2" in row["skipped"] and row["curve"] == [] and (row["n_T"], row["n_V"]) == (0, 0)


def test_training_after_scoring_with_the_fast_attention(tmp_path, bio):
    """The embedded model's copy-free attention caches W_Q's layout; laid out while scoring (under
    inference mode) it must not reach the fine-tune's autograd (the CLI scores first)."""
    from unlearn_core.model.fast_blocks import use_fast_attention

    engine = tiny_engine(cache_dir=str(tmp_path))
    assert use_fast_attention(engine.model) == engine.model.cfg.n_layers
    qs = bio[:2]
    scores = score_questions(engine, qs, [CLAMP], scoring="cloze")  # lays W_Q out under inference mode
    state = rmu.new_delta(engine.model, RL.trained_names(engine.model, RL.DEFAULT), 1e-2)
    loss = RL.train_step(engine, state, RL.fact_rows(engine.model.tokenizer, qs), (CLAMP,), gate=True)
    assert loss == pytest.approx(-sum(s.loglik[q.answer] for q, s in zip(qs, scores)) / 2, abs=1e-4)


def test_delta_added_restores_the_weights_after_an_error(tiny):
    before = params_now(tiny)
    delta = {"blocks.1.mlp.W_out": torch.ones_like(before["blocks.1.mlp.W_out"])}
    with pytest.raises(RuntimeError, match="boom"):
        with rmu.delta_added(tiny.model, delta):
            assert not same(params_now(tiny), before)
            raise RuntimeError("boom")
    assert same(params_now(tiny), before)


def test_the_cli_accepts_relearn_and_keeps_it_out_of_the_default():
    from unlearn_core.cli import build_parser
    from unlearn_core.cli.attack import DEFAULT_ATTACKS

    args = build_parser().parse_args(["attack", "--attacks", "rephrase,relearn", "--defences", "default"])
    assert B.parse_attacks(args.attacks) == ["rephrase", "relearn"]
    assert "relearn" not in DEFAULT_ATTACKS.split(",") and B.ATTACKS["relearn"][0] == "weights"
    with pytest.raises(ValueError, match="at least one > 0"):
        replace(FAST, steps=(0,))
    with pytest.raises(ValueError, match="headline lr"):
        replace(FAST, headline_lr=0.5)
