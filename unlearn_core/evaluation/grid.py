"""The sweep grid a target's default suggests: N and half of it, c and its half and quarter.

Why one function: the Batch page's form and ``sweep --target`` started from different grids
(c = 20/50/100, N = 10/20) while the target's default was c = 400, so the curves a user saw
first never reached the default. Torch-free: the app imports it.
"""

from __future__ import annotations

PAPER_THRESHOLDS = (0.01, 0.001)  # the frequency selection's retain thresholds when a target has none


def default_grid(n: int, c: float, threshold: float, method: str) -> tuple[list[float], list[int], list[float]]:
    """(retain thresholds, numbers of features, clamp values) around a default of N = ``n`` and
    c = ``c``; the target's ``threshold`` only where its selection ``method`` is the frequency one."""
    thresholds = [threshold] if method == "frequency" else [PAPER_THRESHOLDS[0]]
    return thresholds, sorted({max(1, n // 2), n}), [c / 4, c / 2, c]
