"""Integration tests on the embedded Gemma 3 270M and the shipped SAE (CI runs them)."""
import json

import pytest
import torch

from unlearn_core import data as D
from unlearn_core import features as F
from unlearn_core import mcq
from unlearn_core.interventions import Intervention
from unlearn_core.train_sae import EMBEDDED_SAE_DIR

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    from unlearn_core.engine import load_engine
    from unlearn_core.settings import load_settings

    return load_engine(load_settings({"model": "embedded:gemma-3-270m", "saes": ["embedded"]}), progress=False)


@pytest.fixture(scope="module")
def question(shared_data):
    return D.load_wmdp_bio(str(shared_data)).questions[0]


def test_shipped_sae_matches_the_model(engine):
    cfg = json.loads((EMBEDDED_SAE_DIR / "cfg.json").read_text())
    hook = cfg["metadata"]["hook_name"]
    assert hook in engine.model.hook_dict
    assert engine.saes["embedded"].hook_name == hook
    assert cfg["d_in"] == engine.model.cfg.d_model == 640
    assert cfg["d_sae"] >= 4096
    assert (EMBEDDED_SAE_DIR / "sae_weights.safetensors").stat().st_size <= 25 * 2**20


def test_model_loads_and_is_sane(engine):
    m = engine.model
    assert (m.cfg.n_layers, m.cfg.d_model, m.cfg.d_vocab) == (18, 640, 262144)
    logits = m(m.to_tokens("The capital of France is"))[0, -1]
    top = m.tokenizer.decode([int(logits.argmax())])
    assert top.strip() in {"Paris", "the", "a"}, top


def test_scores_a_wmdp_question(engine, question):
    s = mcq.score_question(engine, question)
    assert s.scoring == "cloze" and sum(s.probs) == pytest.approx(1.0, abs=1e-5)
    assert len(s.loglik) == 4 and all(ll < 0 for ll in s.loglik)
    letter = mcq.score_question(engine, question, scoring="letter", style="plain")
    assert 0 < letter.mass <= 1 and all(0 <= p <= 1 for p in letter.probs)


def _codes_on(engine, q):
    text = mcq.cloze_prefix(q) + " " + " ".join(q.choices)
    return F.encode_tokens(engine, "embedded", engine.model.to_tokens(text))[0, 1:]


def test_zero_clamp_on_silent_feature_changes_nothing(engine, question):
    codes = _codes_on(engine, question)
    silent = [int(i) for i in torch.nonzero(codes.max(0).values <= 0).flatten()[:5]]
    assert silent
    base = mcq.score_question(engine, question)
    same = mcq.score_question(engine, question, [Intervention("embedded", tuple(silent), 0.0, "zero")])
    assert same.loglik == pytest.approx(base.loglik, abs=1e-5)


def test_strong_clamp_changes_probabilities(engine, question):
    codes = _codes_on(engine, question)
    active = torch.argsort(codes.max(0).values, descending=True)[:20].tolist()
    base = mcq.score_question(engine, question)
    hit = mcq.score_question(engine, question, [Intervention("embedded", tuple(active), 100.0)])
    assert max(abs(a - b) for a, b in zip(base.loglik, hit.loglik)) > 0.05


def test_generation_is_steered(engine):
    from unlearn_core.metrics import generate

    prompt = "The cell membrane is made of"
    codes = F.encode_tokens(engine, "embedded", engine.model.to_tokens(prompt))[0, 1:]
    active = torch.argsort(codes.max(0).values, descending=True)[:20].tolist()
    base = generate(engine, prompt, None, max_new_tokens=12)
    steered = generate(engine, prompt, [Intervention("embedded", tuple(active), 100.0)], max_new_tokens=12)
    assert base.strip() and steered != base
