"""Targets on the embedded Gemma 3 270M and the shipped SAE (integration; CI runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearn_core.data import loaders as D
from unlearn_core.evaluation import targets as T
from unlearn_core.evaluation.demo import run_demo
from unlearn_core.evaluation.mcq import score_question

pytestmark = pytest.mark.integration
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


@pytest.fixture(scope="module")
def engine():
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import load_engine

    return load_engine(load_settings({"model": "embedded:gemma-3-270m", "saes": ["embedded"]}), progress=False)


# sherlock flipped nothing at its defaults until 2026-12-07
@pytest.mark.parametrize("name", ["bio-basics", "sherlock"])
def test_demo_flips_a_known_question_and_keeps_a_retain_question(engine, shared_data, name):
    out = run_demo(engine, name)
    f, r = out["forget_example"], out["retain_example"]
    assert f is not None, out["summary"]
    assert r is not None, out["summary"]
    t = T.get_target(name)
    iv = T.default_intervention(engine, t)
    # re-check independently of the demo's own bookkeeping: the clean model knows it, the clamp flips it
    q = next(q for q in D.load_question_set(t.forget_questions).questions if q.id == f["question"]["id"])
    assert score_question(engine, q).correct and not score_question(engine, q.blanked()).correct
    assert not score_question(engine, q, [iv]).correct
    rq = next(q for q in D.load_question_set(t.retain_questions[0]).questions if q.id == r["question"]["id"])
    assert score_question(engine, rq).correct and score_question(engine, rq, [iv]).correct
    assert f["verdict"]["kind"] == "forgotten" and r["verdict"]["kind"] == "kept", r["verdict"]
    # the free-text check: a train-half forget question the clean model answers with its keyword
    g = out["generation"]
    assert g is not None and g["keyword"] in g["clean"].lower() and g["clean_says_it"]
    assert (g["keyword"] in g["clamped"].lower()) == g["clamped_says_it"]


def test_target_eval_json_on_the_embedded_model(tmp_path, shared_data, capsys):
    """The CLI's JSON on the embedded model with the target's default intervention, on question
    files given on the command line (40 of each quiz: the whole held-out halves took 110 s of CI;
    the files also exercise the --forget-questions / --retain-questions path). In this process, as
    ``python -m unlearn_core`` runs it (``cli.main``): a child process competed for the 2 cores with
    this one's idle OpenMP threads, which spin under the tier's OMP_WAIT_POLICY=ACTIVE (80 s in CI
    against 40 s on a quiet machine); the unit tier runs the real ``python -m`` on the tiny model."""
    from unlearn_core.cli import main

    files = {}
    for name in ("bio", "retain"):
        qs = json.loads((shared_data / "quiz" / f"{name}_quiz.dev.json").read_text())[:40]
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(qs))
    argv = ["target", "eval", "bio-basics", "--json", "--loss-tokens", "300"]
    argv += ["--forget-questions", str(files["bio"]), "--retain-questions", str(files["retain"])]
    capsys.readouterr()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"target", "intervention", "forget", "retain", "loss_added"} <= set(out)
    for part in ("forget", "retain"):
        d = out[part]
        assert {"n_questions", "n_known", "base_accuracy", "intervened_accuracy"} <= set(d)
        assert d["n_known"] > 10 and d["base_accuracy"] == 1.0
    assert out["forget"]["intervened_accuracy"] < 1.0  # the default intervention removes something
    default = T.get_target("bio-basics").intervention
    assert out["intervention"]["mode"] == default.mode and out["intervention"]["features"]
    assert (out["intervention"]["gate"] is not None) == (default.mode in ("gated", "dsg"))  # tau reported


def test_a_shipped_statistics_entry_equals_a_fresh_computation(engine, tmp_path, monkeypatch, shared_data):
    """The smallest shipped corpus (the retain quiz's train half): the file under the key
    ``feature_stats`` looks up is what computing from nothing gives on this model and SAE. Another
    CPU may round differently, so values are compared to float16/one-token tolerances."""
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.features import stats as F

    monkeypatch.setattr(engine.settings, "cache_dir", str(tmp_path))  # no cache entry: only a shipped one can hit
    corpus, n_tokens = "quiz:retain@train", T.get_target("bio-basics").selection.tokens
    docs, windows = F.stats_windows(engine, corpus, n_tokens, 128)
    entry = F.stats_path(engine, engine.default_sae, corpus, docs, n_tokens, 128)
    shipped = SH.load_shipped(entry)
    assert shipped is not None, f"no shipped statistics {entry.name} (regenerate: python scripts/ship_stats.py)"
    acc = F.StatsAccumulator(engine, engine.default_sae, windows)
    for i in range(acc.n_batches):
        acc.add(i)
    fresh = acc.result()
    assert shipped.keys() == fresh.keys() and int(shipped["n_tokens"][0]) == int(fresh["n_tokens"][0])
    n = int(fresh["n_tokens"][0])
    torch.testing.assert_close(shipped["freq"], fresh["freq"], atol=2 / n, rtol=0)
    for k in ("mean_act", "mean_active", "max_act"):
        torch.testing.assert_close(shipped[k], fresh[k], atol=1e-3, rtol=1e-3, msg=k)
    torch.testing.assert_close(shipped["window_max"].float(), fresh["window_max"].float(), atol=1e-2, rtol=1e-2)
    assert (shipped["hist"] - fresh["hist"]).abs().max() <= 2
    served = F.feature_stats(engine, engine.default_sae, corpus, n_tokens)  # read, not computed: no cache entry
    assert torch.equal(served.window_max, shipped["window_max"]) and not entry.exists()


def test_a_shipped_known_filter_equals_a_fresh_computation(engine, shared_data):
    """The smallest shipped known filter (the retain quiz's train half, strict): the shipped entry
    under the key ``known_questions`` looks up is what deciding every question now gives
    (``scripts/ship_cache.py`` regenerates them)."""
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation.mcq import known_path, known_questions

    qs = D.load_question_set("quiz:retain@train!overlaps_bio").questions
    shipped = C.shipped_entry(known_path(engine, qs, strict=True))
    assert shipped is not None, "no shipped known filter for quiz:retain@train!overlaps_bio (run scripts/ship_cache.py)"
    fresh = [q.id for q in known_questions(engine, qs, strict=True, use_cache=False)]
    assert C.read_json_shipped(shipped) == fresh and len(fresh) > 10


def test_the_shipped_gate_calibration_equals_a_fresh_computation(engine, shared_data):
    """bio-basics' default is gated: its tau comes from rho on each retain corpus, shipped
    (``scripts/ship_cache.py --kinds gate``). The shipped rhos of the corpus that sets tau equal a
    fresh computation, and the default's tau is their 95th percentile."""
    from unlearn_core.core import cache as C
    from unlearn_core.features.stats import corpus_docs, windows_for
    from unlearn_core.method.gate import (
        CALIBRATION_CTX,
        CALIBRATION_TOKENS,
        calibration_path,
        percentile_tau,
        rho_of_tokens,
        tau_over,
    )

    t = T.get_target("bio-basics")
    iv = T.default_intervention(engine, t)
    assert iv.mode in ("gated", "dsg") and iv.gate is not None
    corpus = tau_over(engine, iv.sae_key, iv.features, list(t.retain_corpora), t.intervention.gate_percentile)["corpus"]
    docs = corpus_docs(engine, corpus)
    path = calibration_path(engine, iv.sae_key, iv.features, corpus, docs, CALIBRATION_TOKENS, CALIBRATION_CTX)
    shipped = C.shipped_entry(path)
    assert shipped is not None, f"no shipped gate calibration for {corpus} (run scripts/ship_cache.py --kinds gate)"
    fresh = rho_of_tokens(
        engine, iv.sae_key, iv.features, windows_for(engine, docs, CALIBRATION_TOKENS, CALIBRATION_CTX)
    )
    assert C.read_json_shipped(shipped) == pytest.approx(fresh, abs=1e-6)
    assert iv.gate == pytest.approx(percentile_tau(fresh, t.intervention.gate_percentile))
