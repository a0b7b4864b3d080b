"""The fast slider path must give the straightforward path's numbers (1e-4)."""
from dataclasses import replace

import pytest

from unlearn_core import fastpath, mcq
from unlearn_core.data import Question
from unlearn_core.interventions import Intervention
from unlearn_core.tiny import ALWAYS_FIRES, NEVER_FIRES

Q = Question("fp:1", "Which organelle makes ATP in the cell?", ("ribosome", "the mitochondrion", "nucleus", "a vacuole"),
             1, "biology", "test")
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
    late = [i for i in range(pc.codes.shape[-1]) if (pc.codes[:, P:, i] > 0).any() and not (pc.codes[:, :P, i] > 0).any()]
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
    configs = [Intervention("tiny", tuple(feats[:2]), 5.0), Intervention("tiny", (feats[3],), 50.0),
               Intervention("tiny", (NEVER_FIRES,), 10.0, "zero"), Intervention("tiny", tuple(feats), 3.0, "add")]
    assert fastpath.supports_configs(tiny, configs, scoring)
    fast = fastpath.score_configs(tiny, Q, configs, scoring, "plain", chunk=3)
    for f, iv in zip(fast, configs):
        r = mcq.score_question(tiny, Q, [iv], scoring=scoring, style="plain")
        assert f.probs == pytest.approx(r.probs, abs=1e-4)


def test_sweep_evaluate_configs_matches_per_config(tiny):
    from unlearn_core.sweep import evaluate_configs

    qs = [Q, Question("fp:2", "What is 2+2?", ("3", "4", "5", "22"), 1, "math", "test")]
    feats = _active_features(tiny, 3)
    configs = [[], [Intervention("tiny", tuple(feats), 20.0)], [Intervention("tiny", (feats[0],), 2.0, "zero")],
               [Intervention("tiny", (feats[0],), 2.0), Intervention("tiny", (ALWAYS_FIRES,), 4.0)]]
    res = evaluate_configs(tiny, qs, configs, scoring="letter", style="plain", orderings=True)
    for r, cfg in zip(res, configs):
        items = [v for q in qs for v in mcq.all_orderings(q)]
        ref = mcq.score_questions(tiny, items, cfg or None, "letter", "plain")
        assert r.total == 48 and r.correct == sum(s.correct for s in ref)


def test_score_base_uses_cache_and_matches(tiny):
    iv = Intervention("tiny", tuple(_active_features(tiny)), 10.0)
    fastpath._LRU.clear()
    b = mcq.score_base(tiny, Q, [iv], scoring="cloze", style="plain")
    assert fastpath.STATS["misses"] >= 1 and len(fastpath._LRU) == 1
    assert b.loglik == pytest.approx(mcq.score_question(tiny, Q, scoring="cloze", style="plain").loglik, abs=1e-5)
