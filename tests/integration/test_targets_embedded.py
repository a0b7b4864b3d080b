"""Targets on the embedded Gemma 3 270M and the shipped SAE (integration; CI runs them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_core.data import loaders as D
from unlearn_core.features import targets as T
from unlearn_core.evaluation.demo import run_demo
from unlearn_core.evaluation.mcq import score_question

pytestmark = pytest.mark.integration
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


@pytest.fixture(scope="module")
def engine():
    from unlearn_core.model.engine import load_engine
    from unlearn_core.core.settings import load_settings

    return load_engine(load_settings({"model": "embedded:gemma-3-270m", "saes": ["embedded"]}), progress=False)


def test_demo_flips_a_known_bio_question_and_keeps_a_retain_question(engine, shared_data):
    out = run_demo(engine, "bio-basics")
    f, r = out["forget_example"], out["retain_example"]
    assert f is not None, out["summary"]
    assert r is not None, out["summary"]
    iv = T.default_intervention(engine, T.get_target("bio-basics"))
    # re-check independently of the demo's own bookkeeping: the clean model knows it, the clamp flips it
    q = next(q for q in D.load_question_set("quiz:bio").questions if q.id == f["question"]["id"])
    assert score_question(engine, q).correct and not score_question(engine, q.blanked()).correct
    assert not score_question(engine, q, [iv]).correct
    rq = next(q for q in D.load_question_set("quiz:retain!overlaps_bio").questions if q.id == r["question"]["id"])
    assert score_question(engine, rq).correct and score_question(engine, rq, [iv]).correct


def test_target_eval_json_on_the_embedded_model(tmp_path, shared_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "unlearn_core", "target", "eval", "bio-basics", "--json",
                        "--loss-tokens", "300"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert {"target", "intervention", "forget", "retain", "loss_added"} <= set(out)
    for part in ("forget", "retain"):
        d = out[part]
        assert {"n_questions", "n_known", "base_accuracy", "intervened_accuracy"} <= set(d)
        assert d["n_known"] > 10 and d["base_accuracy"] == 1.0
    assert out["forget"]["intervened_accuracy"] < 1.0  # the default intervention removes something
    assert out["intervention"]["mode"] == "clamp" and out["intervention"]["features"]
