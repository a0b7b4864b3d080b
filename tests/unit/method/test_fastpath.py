"""The fast slider path must give the straightforward path's numbers (1e-4)."""

from dataclasses import replace

import pytest

from unlearn_core.data.loaders import Question
from unlearn_core.evaluation import mcq
from unlearn_core.method import fastpath
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.tiny import ALWAYS_FIRES, NEVER_FIRES

Q = Question(
    "fp:1",
    "Which organelle makes ATP in the cell?",
    ("ribosome", "the mitochondrion", "nucleus", "a vacuole"),
    1,
    "biology",
    "test",
)
VALUES = [0.0, 1.0, 5.0, 20.0, 100.0]


def _active_features(tiny, k=3):
    pc = fastpath.prompt_cache(tiny, Q, "cloze", "plain", "tiny")
    freq = (pc.codes > 0).float().mean((0, 1))
    return [i for i in freq.argsort(descending=True).tolist() if 0 < freq[i] < 0.9][:k]


def slow(tiny, iv, values, scoring):
    return [mcq.score_question(tiny, Q, [replace(iv, value=v)], scoring=scoring, style="plain") for v in values]


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
@pytest.mark.parametrize("mode", ["clamp", "zero", "add", "reconstruct"])
def test_fast_curve_equals_straightforward(tiny, scoring, mode):
    feats = tuple(_active_features(tiny)) if mode != "reconstruct" else tuple(_active_features(tiny, 1))
    iv = Intervention("tiny", feats, 1.0, mode)
    assert fastpath.supports(tiny, [iv], scoring)
    fast = fastpath.score_curve(tiny, Q, [iv], VALUES, scoring, "plain", chunk=2)
    ref = slow(tiny, iv, VALUES, scoring)
    for f, r in zip(fast, ref):
        assert f.probs == pytest.approx(r.probs, abs=1e-4)
        if scoring == "cloze":
            assert f.loglik == pytest.approx(r.loglik, abs=1e-4)
    if mode == "clamp":
        assert max(abs(a - b) for a, b in zip(fast[0].probs, fast[-1].probs)) > 1e-4


def test_features_firing_only_late_and_never(tiny):
    pc = fastpath.prompt_cache(tiny, Q, "cloze", "plain", "tiny")
    P = pc.shared
    late = [
        i for i in range(pc.codes.shape[-1]) if (pc.codes[:, P:, i] > 0).any() and not (pc.codes[:, :P, i] > 0).any()
    ]
    for feats in ([NEVER_FIRES], late[:2] or [ALWAYS_FIRES], [ALWAYS_FIRES]):
        iv = Intervention("tiny", tuple(feats), 30.0)
        fast = fastpath.score_curve(tiny, Q, [iv], [30.0], "cloze", "plain")[0]
        ref = slow(tiny, iv, [30.0], "cloze")[0]
        assert fast.loglik == pytest.approx(ref.loglik, abs=1e-4)


def test_score_curve_dispatches_to_fast_path(tiny, monkeypatch):
    iv = Intervention("tiny", tuple(_active_features(tiny)), 10.0)
    calls = []
    orig = fastpath.score_curve
    monkeypatch.setattr(fastpath, "score_curve", lambda *a, **k: calls.append(1) or orig(*a, **k))
    mcq.score_curve(tiny, Q, [iv], [1.0, 2.0], scoring="cloze", style="plain")
    assert calls
    # two interventions at once: not supported by the fast path, the straightforward path answers
    two = [iv, Intervention("tiny", (ALWAYS_FIRES,), 5.0)]
    assert not fastpath.supports(tiny, two, "cloze")
    assert len(mcq.score_curve(tiny, Q, two, [1.0], scoring="cloze", style="plain")) == 1


def test_base_score_from_cache(tiny):
    b = fastpath.base_score(tiny, Q, "cloze", "plain", "tiny")
    r = mcq.score_question(tiny, Q, scoring="cloze", style="plain")
    assert b.loglik == pytest.approx(r.loglik, abs=1e-5)


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_configs_batched_equal_one_by_one(tiny, scoring):
    feats = _active_features(tiny, 4)
    configs = [
        Intervention("tiny", tuple(feats[:2]), 5.0),
        Intervention("tiny", (feats[3],), 50.0),
        Intervention("tiny", (NEVER_FIRES,), 10.0, "zero"),
        Intervention("tiny", tuple(feats), 3.0, "add"),
    ]
    assert fastpath.supports_configs(tiny, configs, scoring)
    fast = fastpath.score_configs(tiny, Q, configs, scoring, "plain", chunk=3)
    for f, iv in zip(fast, configs):
        r = mcq.score_question(tiny, Q, [iv], scoring=scoring, style="plain")
        assert f.probs == pytest.approx(r.probs, abs=1e-4)


def test_sweep_evaluate_configs_matches_per_config(tiny):
    from unlearn_core.evaluation.sweep import evaluate_configs

    qs = [Q, Question("fp:2", "What is 2+2?", ("3", "4", "5", "22"), 1, "math", "test")]
    feats = _active_features(tiny, 3)
    configs = [
        [],
        [Intervention("tiny", tuple(feats), 20.0)],
        [Intervention("tiny", (feats[0],), 2.0, "zero")],
        [Intervention("tiny", (feats[0],), 2.0), Intervention("tiny", (ALWAYS_FIRES,), 4.0)],
    ]
    res = evaluate_configs(tiny, qs, configs, scoring="letter", style="plain", orderings=True)
    for r, cfg in zip(res, configs):
        items = [v for q in qs for v in mcq.all_orderings(q)]
        ref = mcq.score_questions(tiny, items, cfg or None, "letter", "plain")
        assert r.total == 48 and r.correct == sum(s.correct for s in ref)


@pytest.mark.parametrize("n_configs", [2, 3])
def test_evaluate_configs_cloze_batched_or_fast_equals_one_by_one(tiny, n_configs):
    """Two configurations go through batches of questions, three through the fast path: both
    count what scoring each question alone under each configuration counts."""
    from unlearn_core.evaluation.sweep import FEW_CONFIGS, evaluate_configs

    qs = [Q, Question("fp:2", "What is 2+2?", ("3", "4", "5", "22"), 1, "math", "test")] * 5
    qs += [Question("fp:3", "Pick b.", ("a", "b", "c", "d"), 1, "misc", "test")]
    feats = _active_features(tiny, 3)
    configs = [[], [Intervention("tiny", tuple(feats), 20.0)], [Intervention("tiny", (feats[0],), 60.0)]][:n_configs]
    assert (n_configs <= FEW_CONFIGS) == (n_configs == 2)
    ticks = []
    res = evaluate_configs(tiny, qs, configs, scoring="cloze", style="plain", progress=ticks.append)
    assert sum(ticks) == len(qs)
    for r, cfg in zip(res, configs):
        ref = [mcq.score_question(tiny, q, cfg or None, scoring="cloze", style="plain") for q in qs]
        assert r.total == len(qs) and r.correct == sum(s.correct for s in ref)


def test_score_base_uses_cache_and_matches(tiny):
    iv = Intervention("tiny", tuple(_active_features(tiny)), 10.0)
    fastpath._LRU.clear()
    b = mcq.score_base(tiny, Q, [iv], scoring="cloze", style="plain")
    assert fastpath.STATS["misses"] >= 1 and len(fastpath._LRU) == 1
    assert b.loglik == pytest.approx(mcq.score_question(tiny, Q, scoring="cloze", style="plain").loglik, abs=1e-5)


@pytest.mark.parametrize("where", ["in the stem", "after the stem"])
def test_downstream_rows_against_a_hooked_forward(tiny, where):
    """Rows sharing a stem, a residual change from p0 on (inside or after the stem): the cached
    downstream pass against a full forward that adds the same change at the hook."""
    import torch

    from unlearn_core.evaluation.mcq import all_orderings

    variants = all_orderings(Q)[:5]
    pc = fastpath._build(tiny, *fastpath._letter_ordering_rows(tiny, variants, "plain"), "tiny", variants)
    R, T, d = pc.x.shape
    p0 = 2 if where == "in the stem" else pc.shared + 3
    delta = torch.randn(2, R, T, d, generator=torch.Generator().manual_seed(0)) * 0.5
    delta[:, :, : pc.shared] = delta[:, :1, : pc.shared].clone()  # identical tokens, identical change
    delta[:, :, :p0] = 0
    fast = fastpath.downstream_final(tiny, pc, delta, p0)
    hook = tiny.saes["tiny"].hook_name
    for v in range(2):
        with torch.inference_mode(), tiny.model.hooks(fwd_hooks=[(hook, lambda x, hook, v=v: x + delta[v])]):
            ref = tiny.model(pc.tokens, stop_at_layer=tiny.model.cfg.n_layers)
        for r in range(R):
            n = int(pc.lens[r])
            torch.testing.assert_close(fast[v, r, :n], ref[r, :n], atol=1e-4, rtol=1e-4)


def test_orderings_as_rows_equal_straightforward(tiny):
    """All 24 orderings as the rows of one cache (shared stem) against each ordering scored alone."""
    from unlearn_core.evaluation.mcq import all_orderings

    variants = all_orderings(Q)
    pc = fastpath._build(tiny, *fastpath._letter_ordering_rows(tiny, variants, "plain"), "tiny", variants)
    assert 1 < pc.shared < pc.tokens.shape[1]
    feats = _active_features(tiny, 3)
    configs = [
        Intervention("tiny", tuple(feats), 5.0),
        Intervention("tiny", (ALWAYS_FIRES,), 50.0),
        Intervention("tiny", (NEVER_FIRES,), 9.0),
        Intervention("tiny", (feats[0],), 2.0, "add"),
        Intervention("tiny", (feats[1],), 1.0, "zero"),
    ]
    base, per = fastpath.score_orderings(tiny, Q, configs, "plain", chunk=2)
    assert len(base) == 24 and all(len(p) == 24 for p in per)
    for r, v in enumerate(variants):
        assert base[r].probs == pytest.approx(
            mcq.score_question(tiny, v, scoring="letter", style="plain").probs, abs=1e-4
        )
        for iv, scores in zip(configs, per):
            ref = mcq.score_question(tiny, v, [iv], scoring="letter", style="plain")
            assert scores[r].probs == pytest.approx(ref.probs, abs=1e-4)
            assert scores[r].correct == ref.correct


def test_rows_of_different_lengths_share_the_stem(tiny):
    """Right-padded rows with a common stem: each row's last real token is read."""
    stem = "Which organelle makes ATP in the cell?"
    variants = [
        Question(f"len:{i}", stem, ch, i % 4, "biology", "test")
        for i, ch in enumerate(
            [("a", "bb", "ccc", "dddd"), ("mitochondrion", "x", "y", "z"), ("one", "two", "three", "four five six")]
        )
    ]
    rows = fastpath._letter_ordering_rows(tiny, variants, "plain")
    assert len(set(rows[1].tolist())) == 3  # three different lengths
    pc = fastpath._build(tiny, *rows, "tiny", variants)
    feats = _active_features(tiny, 2)
    configs = [Intervention("tiny", tuple(feats), 30.0), Intervention("tiny", (feats[0],), 3.0, "add")]
    per = fastpath._score_configs(tiny, pc, configs, "letter", chunk=2)
    for iv, scores in zip(configs, per):
        for v, s in zip(variants, scores):
            assert s.probs == pytest.approx(
                mcq.score_question(tiny, v, [iv], scoring="letter", style="plain").probs, abs=1e-4
            )
