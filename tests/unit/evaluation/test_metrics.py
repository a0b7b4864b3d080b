"""Loss added and perplexity against direct computations on the tiny model."""

import math

import pytest
import torch

from unlearn_core.evaluation import metrics
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.tiny import ALWAYS_FIRES, NEVER_FIRES

DOCS = ["Cells are the basic unit of life. " * 5, "Proteins fold into shapes. " * 6, "DNA stores information."]


def direct_mean_nll(model, windows):
    total, n = 0.0, 0
    for w in windows:
        toks = torch.tensor([w])
        lp = torch.log_softmax(model(toks)[0].double(), -1)
        total -= sum(float(lp[i, t]) for i, t in enumerate(w[1:]))
        n += len(w) - 1
    return total / n, n


def test_windows_budget_and_bos(tiny):
    w = metrics.corpus_windows(tiny.model, DOCS, n_tokens=100, ctx=32)
    bos = tiny.model.tokenizer.bos_token_id
    assert all(x[0] == bos and len(x) <= 32 for x in w)
    assert sum(len(x) - 1 for x in w) == 100


def test_perplexity_matches_direct_computation(tiny):
    out = metrics.perplexity(tiny, DOCS, n_tokens=150, ctx=40)
    windows = metrics.corpus_windows(tiny.model, DOCS, 150, 40)
    nll, n = direct_mean_nll(tiny.model, windows)
    assert out["n_tokens"] == n == 150
    assert out["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)


def test_loss_added_zero_for_silent_feature_and_positive_for_strong_clamp(tiny):
    silent = metrics.loss_added(tiny, DOCS, [Intervention("tiny", (NEVER_FIRES,), 0.0, "zero")], n_tokens=120, ctx=40)
    assert silent.loss_added == pytest.approx(0.0, abs=1e-5)
    strong = metrics.loss_added(tiny, DOCS, [Intervention("tiny", (ALWAYS_FIRES,), 200.0)], n_tokens=120, ctx=40)
    assert abs(strong.loss_added) > 1e-3
    assert strong.clean_loss == pytest.approx(silent.clean_loss)


def test_generate_validates_length(tiny):
    with pytest.raises(ValueError):
        metrics.generate(tiny, "Hi", None, max_new_tokens=0)
