"""Per-feature clamp values: c_i = c * scale_i, with scale_i from each feature's own activation scale.

Why: features fire at very different magnitudes (a peak of 3 for one, 300 for another), so a
uniform c is a mild push for one and a reversal for another. With ``forget-max`` scales,
scale_i = (feature i's max activation on the forget text) / (the median of those maxima over the
selected features): one c means the same multiple of each feature's own peak, and the median
feature gets exactly c. The uniform c stays the default (``SCALE_RULES[0]``). Torch-free (the
target registry reads ``SCALE_RULES``): ``max_act`` is anything indexable, a tensor included.
"""

from __future__ import annotations

from typing import Any

from unlearn_core.method.modes import MAX_SCALE

SCALE_RULES = ("uniform", "forget-max")


def max_act_scales(max_act: Any, features: tuple[int, ...] | list[int]) -> tuple[float, ...]:
    """scale_i = max_act[i] / median(max_act[selected]) (the mean of the middle two for an even count),
    clipped to [1/MAX_SCALE, MAX_SCALE]; a feature that never fired (max 0) gets 1, the median's."""
    if not features:
        return ()
    peaks = [float(max_act[i]) for i in features]
    alive = sorted(p for p in peaks if p > 0)
    if not alive:
        return tuple(1.0 for _ in peaks)
    k = len(alive)
    median = alive[k // 2] if k % 2 else (alive[k // 2 - 1] + alive[k // 2]) / 2
    return tuple(min(max(p / median, 1 / MAX_SCALE), MAX_SCALE) if p > 0 else 1.0 for p in peaks)


def scales_for(rule: str, max_act: Any, features: tuple[int, ...]) -> tuple[float, ...] | None:
    """The scales a rule of ``SCALE_RULES`` gives (None: the uniform c)."""
    if rule not in SCALE_RULES:
        raise ValueError(f"clamp scale rule must be one of {SCALE_RULES}, got {rule!r}")
    return None if rule == "uniform" else max_act_scales(max_act, features)
