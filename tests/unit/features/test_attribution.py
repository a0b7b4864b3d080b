"""Question-based feature scores: attribution against finite differences, DSG's Fisher selection
against hand-made and independently computed references, the disk cache, and targets naming them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from cli_helpers import run_cli
from model_helpers import ForwardCounter

from unlearn_core.data import loaders as D
from unlearn_core.data.questions import Question
from unlearn_core.evaluation import target_scores as TS
from unlearn_core.evaluation import targets as T
from unlearn_core.features import attribution as A
from unlearn_core.features import score_ranking as SR
from unlearn_core.model.tiny import tiny_engine


@pytest.fixture(scope="module")
def cloze(tmp_path_factory):
    """The tiny engine scoring by cloze (one pass decides known; letters need 24 orderings a question)."""
    e = tiny_engine(cache_dir=str(tmp_path_factory.mktemp("attr_cache")))
    e.settings = dataclasses.replace(e.settings, scoring="cloze")
    return e


def _questions(shared_data, spec: str, n: int) -> list[Question]:
    return D.load_question_set(spec, str(shared_data)).questions[:n]


def _bio(**kw) -> T.Target:
    """bio-basics with small corpora (the frequency columns), cloze scoring and the plain known filter."""
    return T.replace_intervention(
        T.get_target("bio-basics"),
        retain_corpora=("wikitext@train",),
        tokens=2_000,
        scoring="cloze",
        strict_known=False,
        **kw,
    )


# ---------------------------------------------------------------- attribution = f * grad, checked by finite differences


def _logp(engine, row, delta) -> float:
    return A.codes_and_gradient(engine, "tiny", row, delta)[2]


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_the_gradient_and_f_times_grad_match_finite_differences(cloze, shared_data, scoring):
    """Perturbing one feature's codes (error term kept) moves logP by what the gradient says: at
    one position, at every scored position at once, and along the codes themselves (f * grad)."""
    q = _questions(shared_data, "quiz:bio@train", 1)[0]
    row = A.scored_row(cloze, q, scoring, "plain")
    f, g, lp = A.codes_and_gradient(cloze, "tiny", row)
    T_, d = f.shape
    assert lp < 0 and g.shape == (T_, d) and float(g.abs().sum()) > 0
    active = (f[1:] > 0).sum(0)
    feats = [int(i) for i in torch.argsort(active, descending=True)[:4]]  # features firing on many positions
    for i in feats:
        t = 1 + int(torch.argmax(g[1:, i].abs()))  # the position where the feature matters most
        assert abs(float(g[t, i])) > 1e-4  # a check that can fail
        one = torch.zeros(T_, d)
        one[t, i] = 0.05
        fd = (_logp(cloze, row, one) - _logp(cloze, row, -one)) / 0.1
        assert fd == pytest.approx(float(g[t, i]), rel=2e-2, abs=1e-5)
        eps = 1e-2
        every = torch.zeros(T_, d)
        every[1:, i] = eps  # every position a clamp touches (all but BOS)
        fd = (_logp(cloze, row, every) - _logp(cloze, row, -every)) / (2 * eps)
        assert fd == pytest.approx(float(g[1:, i].sum()), rel=2e-2, abs=1e-5)
        along = torch.zeros(T_, d)
        along[1:, i] = eps * f[1:, i]  # d/deps logP(f + eps f) = sum_t f * grad: the attribution
        fd = (_logp(cloze, row, along) - _logp(cloze, row, -along)) / (2 * eps)
        assert fd == pytest.approx(float((f[1:, i] * g[1:, i]).sum()), rel=2e-2, abs=1e-5)


def test_the_clean_splice_is_the_clean_model_and_logp_is_what_scoring_reads(cloze, shared_data):
    """With the SAE spliced in (error kept) the answer's logP is the scored one: cloze's mean
    log-likelihood of the correct choice, letter's log probability of the correct letter."""
    from unlearn_core.evaluation import mcq

    for q in _questions(shared_data, "quiz:bio@train", 3):
        lp = A.codes_and_gradient(cloze, "tiny", A.scored_row(cloze, q, "cloze", "plain"))[2]
        assert lp == pytest.approx(float(mcq.cloze_logliks(cloze, q)[q.answer]), abs=1e-4)
        lp = A.codes_and_gradient(cloze, "tiny", A.scored_row(cloze, q, "letter", "plain"))[2]
        probs, _ = mcq.letter_probs_batch(cloze, [mcq.format_prompt(q, "plain", cloze.model.tokenizer)])
        assert lp == pytest.approx(float(torch.log(probs[0, q.answer])), abs=1e-4)


def test_a_side_is_the_mean_over_its_questions_of_f_times_grad(cloze, shared_data):
    qs = _questions(shared_data, "quiz:bio@train", 3)
    rq = _questions(shared_data, "quiz:retain@train", 2)
    per = []
    for q in qs + rq:
        f, g, _ = A.codes_and_gradient(cloze, "tiny", A.scored_row(cloze, q, "cloze", "plain"))
        per.append((f[1:].double() * g[1:].double()).sum(0))
    out = A.compute_scores(cloze, "tiny", "attribution", qs, rq, "cloze", "plain")
    assert torch.allclose(out["forget_value"].double(), sum(per[:3]) / 3, atol=1e-6)
    assert torch.allclose(out["retain_value"].double(), sum(per[3:]) / 2, atol=1e-6)
    assert int(out["forget_n"]) == 3 and int(out["retain_n"]) == 2


def test_attribution_ranks_forget_minus_retain_among_features_firing_on_forget():
    scores = {
        "forget_value": torch.tensor([0.5, 0.2, 0.0, 0.9, -0.1, 0.3]),
        "retain_value": torch.tensor([0.1, -0.4, -2.0, 0.95, -0.5, 0.3]),
        "forget_fires": torch.tensor([1.0, 0.5, 0.0, 1.0, 0.2, 1.0]),
        "retain_fires": torch.ones(6),
    }
    rows = SR.rank_attribution(scores, n=10)
    # 0: 0.4, 1: 0.6, 2: never fires on forget, 3: -0.05, 4: 0.4 but zeroing it would not lower the forget
    # answers (A_forget < 0: it only helps retain ones), 5: 0
    assert [r["feature"] for r in rows] == [1, 0]
    assert [round(r["score"], 6) for r in rows] == [0.6, 0.4]
    assert rows[0]["forget_score"] == pytest.approx(0.2) and rows[0]["retain_score"] == pytest.approx(-0.4)
    assert [r["feature"] for r in SR.rank_attribution(scores, n=1)] == [1]


# ---------------------------------------------------------------- fisher: DSG's rule


def test_fisher_selects_as_dsg_on_a_hand_made_case():
    """80 features: 75 ordinary ones (forget mean 0.1, retain 0.2: ratio 0.25), and five made by hand.
    DSG's thresholds, worked out by hand: the ratio's 95th percentile over 80 values sits at sorted
    position 75.05, between 0.25 and 1, so ratio >= 0.2875 passes (11, 7, 0, 3); the forget score's
    5th percentile sits at position 3.95, among the ordinary 0.01s, so 0 (1e-8) fails; 20 never fires.
    Ranked by forget score: 11 (9), 3 (4), 7 (1)."""
    m_f = torch.full((80,), 0.1)
    m_r = torch.full((80,), 0.2)
    for i, (a, b) in {3: (2.0, 0.0), 7: (1.0, 0.01), 11: (3.0, 3.0), 0: (1e-4, 0.0), 20: (0.0, 0.1)}.items():
        m_f[i], m_r[i] = a, b
    fires = (m_f > 0).float()
    rows = SR.rank_fisher({"forget_value": m_f, "retain_value": m_r, "forget_fires": fires, "retain_fires": fires}, 5)
    assert [r["feature"] for r in rows] == [11, 3, 7]
    assert [r["score"] for r in rows] == pytest.approx([9.0, 4.0, 1.0])
    assert rows[2]["retain_score"] == pytest.approx(1e-4)


def _percentile(values: list[float], p: float) -> float:
    """Linear-interpolation percentile (numpy's default), written out."""
    v = sorted(values)
    pos = p / 100 * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def _jumprelu_codes(engine, ids: list[int]) -> list[list[float]]:
    """The tiny SAE's codes at its hook, by an explicit float64 computation."""
    loaded = engine.saes["tiny"]
    _, cache = engine.model.run_with_cache(torch.tensor([ids]), names_filter=loaded.hook_name)
    x = cache[loaded.hook_name][0].double()
    sae = loaded.sae
    pre = x @ sae.W_enc.double() + sae.b_enc.double()
    return (torch.relu(pre) * (pre > sae.threshold.double())).tolist()


def test_fisher_equals_an_explicit_float64_loop_on_tiny(cloze, shared_data):
    qs = _questions(shared_data, "quiz:bio@train", 4)
    rq = _questions(shared_data, "quiz:retain@train", 4)
    special = set(A.special_ids(cloze))
    d = cloze.saes["tiny"].d_sae
    means = []
    for side in (qs, rq):
        total, n = [0.0] * d, 0
        for q in side:
            ids = A.scored_row(cloze, q, "cloze", "plain").ids
            for t, codes in enumerate(_jumprelu_codes(cloze, ids)):
                if t == 0 or ids[t] in special:
                    continue
                n += 1
                for i in range(d):
                    total[i] += codes[i]
        means.append([x / n for x in total])
    out = A.compute_scores(cloze, "tiny", "fisher", qs, rq, "cloze", "plain")
    assert out["forget_value"].tolist() == pytest.approx(means[0], abs=1e-5)
    assert out["retain_value"].tolist() == pytest.approx(means[1], abs=1e-5)
    f = [m * m for m in means[0]]
    r = [m * m for m in means[1]]
    ratio = [a / (b + 1e-21) for a, b in zip(f, r)]
    pf, pr = _percentile(f, 5), _percentile(ratio, 95)
    want = sorted((i for i in range(d) if f[i] >= pf and ratio[i] >= pr and f[i] > 0), key=lambda i: -f[i])
    assert [r["feature"] for r in SR.rank_fisher(out, d)] == want and want


# ---------------------------------------------------------------- the disk cache


@pytest.mark.parametrize("method", A.SCORE_METHODS)
def test_scores_are_cached_and_miss_when_the_questions_change(tmp_path, shared_data, method):
    e = tiny_engine(cache_dir=str(tmp_path))
    qs = _questions(shared_data, "quiz:bio@train", 3)
    rq = _questions(shared_data, "quiz:retain@train", 2)
    ticks: list[int] = []
    with ForwardCounter(e.model) as fw:
        first = A.feature_scores(e, "tiny", method, qs, rq, "cloze", progress=ticks.append)
    assert fw.n > 0 and sum(ticks) == 5
    with ForwardCounter(e.model) as fw:
        again = A.feature_scores(e, "tiny", method, qs, rq, "cloze", progress=ticks.append)
    assert fw.n == 0 and sum(ticks) == 5  # read from disk: no forward pass, no progress
    assert all(torch.equal(first[k], again[k]) for k in first)
    edited = [dataclasses.replace(qs[0], question=qs[0].question + " (edited)"), *qs[1:]]  # same ids
    with ForwardCounter(e.model) as fw:
        other = A.feature_scores(e, "tiny", method, edited, rq, "cloze")
    assert fw.n > 0
    fresh = A.compute_scores(e, "tiny", method, edited, rq, "cloze", e.prompt_format)
    assert all(torch.equal(other[k], fresh[k]) for k in fresh)
    assert not torch.equal(other["forget_value"], first["forget_value"])
    assert len(list((tmp_path / A.CACHE_KIND).glob("*.safetensors"))) == 2


# ---------------------------------------------------------------- targets naming the methods


def test_a_target_names_the_methods_and_bad_ones_are_refused(tmp_path):
    base = '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n'
    for m in ("attribution", "fisher"):
        (tmp_path / "t.toml").write_text(base + f'[x.selection]\nmethod="{m}"\nn=7\n')
        assert T.load_targets(str(tmp_path / "t.toml"))["x"].selection.method == m
    (tmp_path / "t.toml").write_text(base + '[x.selection]\nmethod="gradient"\n')
    with pytest.raises(T.TargetError, match="selection method must be one of"):
        T.load_targets(str(tmp_path / "t.toml"))
    with pytest.raises(ValueError, match="@train only"):
        TS.train_spec("quiz:bio@heldout")
    assert TS.train_spec("quiz:retain!overlaps_bio") == "quiz:retain@train!overlaps_bio"


@pytest.mark.parametrize("method", A.SCORE_METHODS)
def test_select_for_target_by_a_question_method(cloze, shared_data, method):
    """Rows as the frequency method's plus a score, ranked by it, on the train half's known questions
    only; the default intervention takes those features."""
    t = _bio(method=method, n=4)
    out = T.select_for_target(cloze, t)
    assert out["method"] == method and out["threshold"] is None and out["scoring"] == "cloze"
    assert out["forget_questions"] == "quiz:bio@train"
    assert out["retain_questions"] == [T.with_part(q, "train") for q in t.retain_questions]
    forget, retain = TS.train_question_sets(cloze, t)
    fk, rk = TS.known_train_questions(cloze, t, forget, retain)
    assert (out["n_forget_questions"], out["n_retain_questions"]) == (len(fk), len(rk)) and fk and rk
    heldout = {q.id for q in D.load_question_set("quiz:bio@heldout", str(shared_data)).questions}
    assert not heldout & {q.id for q in fk}
    scores, _ = TS.target_feature_scores(cloze, t, "tiny", method)
    want = SR.rank_by_scores(scores, method, 4)
    rows = out["features"]
    assert 0 < len(rows) <= 4 and [r["feature"] for r in rows] == [r["feature"] for r in want]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    for r in rows:
        assert {"feature", "score", "forget_freq", "retain_freq", "ratio", "retain_freqs"} <= set(r)
        assert r["forget_question_freq"] > 0 and set(r["retain_freqs"]) == {"wikitext@train"}
    iv = T.default_intervention(cloze, t)
    assert list(iv.features) == [r["feature"] for r in rows]
    assert f"the top {len(rows)} features by" in T.selection_text(out) and "`quiz:bio@train`" in T.selection_text(out)
    by_freq = T.select_for_target(cloze, t, threshold=1.0)  # an explicit threshold: the frequency method
    assert by_freq["method"] == "frequency" and "score" not in by_freq["features"][0]


def test_cli_features_select_by_attribution_for_a_target(tmp_path, shared_data, capsys, monkeypatch):
    """A user target (a targets file) naming fisher; --method attribution overrides it; the method
    without a target is an argument error."""
    (tmp_path / "f.txt").write_text("Some forget text about pathogens, toxins and vaccines. " * 30)
    (tmp_path / "t.toml").write_text(
        '[mine]\nforget_corpus = "f.txt"\nforget_questions = "quiz:bio"\nretain_corpora = ["wikitext@train"]\n'
        'retain_questions = ["quiz:retain"]\nscoring = "cloze"\nstrict_known = false\n'
        '[mine.selection]\nmethod = "fisher"\nn = 3\ntokens = 500\n'
    )
    monkeypatch.chdir(tmp_path)
    common = ["--tiny", "--cache-dir", str(tmp_path / "cache"), "--targets", str(tmp_path / "t.toml")]
    p = run_cli(capsys, "features", "select", "--method", "attribution", "--target", "mine", "--json", *common)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["method"] == "attribution" and out["target"] == "mine" and out["features"]
    assert out["forget_questions"] == "quiz:bio@train"
    assert all(r["score"] > 0 and "forget_freq" in r for r in out["features"])
    own = json.loads(run_cli(capsys, "features", "select", "--target", "mine", "--json", *common).stdout)
    assert own["method"] == "fisher" and len(own["features"]) <= 3  # the target's own
    text = run_cli(capsys, "features", "select", "--target", "mine", *common).stdout
    assert "DSG's Fisher score" in text and "score" in text
    bad = run_cli(capsys, "features", "select", "--method", "attribution", *common)
    assert bad.returncode == 2 and "--target" in bad.stderr
