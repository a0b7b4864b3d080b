"""Ranking the features active on a text by how much they say about it.

A feature that fires on most tokens of any text (a dense feature) tops a ranking by activation
and tells a person nothing. Specificity weighs the activation on the text against the feature's
background: how strongly it fires here relative to its usual peak on a background corpus, times
the information of its firing there (log2 of 1 / firing frequency). Dense features (active on
more than ``DENSE_FREQ`` of the background's tokens) are flagged and ranked after the rest."""

from __future__ import annotations

import torch

DENSE_FREQ = 0.10
MIN_FREQ = 1e-5  # a feature never seen firing on the background counts as this rare
MAX_RELATIVE = 2.0  # twice its usual peak is as strong as the ranking rewards


def scores(max_on_text: torch.Tensor, bg_freq: torch.Tensor, bg_max: torch.Tensor) -> torch.Tensor:
    """[d_sae] specificity of each feature's activation on the text (0 where it does not fire).
    A feature silent on the background is compared with the median peak of the live ones, so a
    faint activation of a never-seen feature does not outrank everything."""
    live = bg_max[bg_max > 0]
    ref_default = live.median() if live.numel() else torch.tensor(1.0)
    ref = torch.where(bg_max > 0, bg_max, ref_default)
    relative = (max_on_text / ref).clamp(min=0, max=MAX_RELATIVE)
    bits = torch.log2(1.0 / bg_freq.clamp(min=MIN_FREQ))
    return relative * bits


def order(score: torch.Tensor, active: torch.Tensor, dense: torch.Tensor, dense_last: bool = True) -> list[int]:
    """Active features by score, highest first; dense ones after all the others unless
    ``dense_last`` is False."""
    idx = torch.nonzero(active).flatten()
    ranked = idx[torch.argsort(score[idx], descending=True, stable=True)].tolist()
    if not dense_last:
        return ranked
    return [i for i in ranked if not dense[i]] + [i for i in ranked if dense[i]]
