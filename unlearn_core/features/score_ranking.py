"""Ranking features by their question scores (``attribution.feature_scores``' sides).

Pure functions of the per-feature vectors, so the rule is tested on hand-made numbers.
"""

from __future__ import annotations

import numpy as np
import torch

# DSG's defaults (their evals/unlearning/eval_config.py and utils/feature_activation.py,
# get_top_features_percentile): forget importance at or above its 5th percentile, retain
# importance at or below its 100th (no filter), forget/retain ratio at or above its 95th.
FISHER_FORGET_PERCENTILE = 5.0
FISHER_RETAIN_PERCENTILE = 100.0
FISHER_RATIO_PERCENTILE = 95.0
FISHER_EPS = 1e-21  # DSG's: ratio = forget / (retain + 1e-21)


def _rows(order: list[int], score, forget, retain, scores: dict) -> list[dict]:
    return [
        {
            "feature": i,
            "score": float(score[i]),
            "forget_score": float(forget[i]),
            "retain_score": float(retain[i]),
            "forget_question_freq": float(scores["forget_fires"][i]),
            "retain_question_freq": float(scores["retain_fires"][i]),
        }
        for i in order
    ]


def rank_attribution(scores: dict[str, torch.Tensor], n: int) -> list[dict]:
    """score_i = A_forget,i - A_retain,i, A a side's mean over its questions of sum_t f_i * dlogP/df_i.

    A positive score means zeroing the feature would, to first order, lower the correct answer's
    log-probability on forget questions more than on retain questions. Kept: features that fire
    on at least one forget question, with A_forget > 0 (zeroing them lowers the forget answers:
    without it a feature whose removal only *helps* retain answers would rank high while doing
    nothing to the forget ones, as on the embedded model) and score > 0; by score (descending),
    the top ``n``."""
    if n < 1:
        raise ValueError("n must be >= 1")
    a_f, a_r = scores["forget_value"].double(), scores["retain_value"].double()
    score = a_f - a_r
    ok = (scores["forget_fires"] > 0) & (a_f > 0) & (score > 0)
    idx = torch.nonzero(ok).flatten()
    order = idx[torch.argsort(score[idx], descending=True, stable=True)][:n].tolist()
    return _rows(order, score, a_f, a_r, scores)


def rank_fisher(scores: dict[str, torch.Tensor], n: int) -> list[dict]:
    """DSG's selection (``get_top_features_percentile`` in their
    evals/unlearning/utils/feature_activation.py), on the questions' mean activations m:

    forget_i = m_forget,i ** 2, retain_i = m_retain,i ** 2 ("square activations to match FIM-style
    importance"), ratio_i = forget_i / (retain_i + 1e-21); candidates have forget_i >= its 5th
    percentile over all features, retain_i <= its 100th, ratio_i >= its 95th (numpy's linear
    percentiles, as theirs); ranked by forget_i, descending. One addition: a feature must fire on
    a forget question (DSG would list never-firing ones last, after every other candidate)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    f = scores["forget_value"].double().numpy() ** 2
    r = scores["retain_value"].double().numpy() ** 2
    ratio = f / (r + FISHER_EPS)
    ok = (
        (f >= np.percentile(f, FISHER_FORGET_PERCENTILE))
        & (r <= np.percentile(r, FISHER_RETAIN_PERCENTILE))
        & (ratio >= np.percentile(ratio, FISHER_RATIO_PERCENTILE))
        & (scores["forget_fires"].numpy() > 0)
    )
    idx = np.nonzero(ok)[0]
    order = idx[np.argsort(-f[idx], kind="stable")][:n].tolist()
    return _rows(order, f, f, r, scores)


RANKERS = {"attribution": rank_attribution, "fisher": rank_fisher}


def rank_by_scores(scores: dict[str, torch.Tensor], method: str, n: int) -> list[dict]:
    if method not in RANKERS:
        raise ValueError(f"method must be one of {tuple(RANKERS)}, got {method!r}")
    return RANKERS[method](scores, n)
