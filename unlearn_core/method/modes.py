"""The intervention modes by name, and the clamp bound: torch-free.

Why apart from ``interventions``: the HTTP schemas (imported by the Streamlit UI and remote
clients) validate mode names and clamp values without loading torch.
"""

from __future__ import annotations

MODE_LABELS = {
    "clamp": "clamp when active to -c (paper)",
    "zero": "zero ablation (c = 0)",
    "add": "unconditional: add -c·W_dec everywhere (different method)",
    "reconstruct": "reconstruction only, error term dropped (Harry Potter study)",
    "gated": "gated: clamp when active, only on prompts where the features fire on > τ of tokens",
    "dsg": "gated, DSG variant: once open, all selected features to -c wherever any fires",
}
# a few words each, for a select box or a figure title (the labels above are for help texts)
MODE_SHORT = {
    "clamp": "clamp when active (paper)",
    "zero": "zero ablation",
    "add": "add -c·W_dec everywhere",
    "reconstruct": "reconstruction only",
    "gated": "gated clamp (τ)",
    "dsg": "DSG gated clamp (τ)",
}
MODES = tuple(MODE_LABELS)  # the registry's names, in order
GATED_MODES = ("gated", "dsg")  # the modes that take a gate (tau)
MAX_ABS_CLAMP = 1e4
MAX_SCALE = 1e3  # a per-feature clamp scale (c_i = c * scale_i) is in (0, MAX_SCALE]
