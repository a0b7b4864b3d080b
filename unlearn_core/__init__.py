"""SAE Unlearning Workbench: remove knowledge from a language model by clamping SAE features,
and measure what that does.

The package, by concern, lowest layer first (``tests/unit/test_import_graph.py`` holds the exact
order and fails on an upward import):

* :mod:`.core`       settings, paths, content-keyed disk caches, and the registries (``core/assets``:
  targets, RMU defaults, caches) with the shipped SAE;
* :mod:`.data`       the question schema, question files, question sets and corpora, prompts;
* :mod:`.model`      the model and its SAEs, loaded and run (``Engine``), the tiny test backend;
  (the SAE loader and the intervention hooks of :mod:`.method` sit below the Engine);
* :mod:`.features`   feature statistics, search, descriptions, Neuronpedia;
* :mod:`.method`     the interventions (clamp, gated clamp) as hooks, the gate, the fast path;
* :mod:`.evaluation` targets, scoring, metrics, sweeps (local or Ray), the demo; then, above
  :mod:`.training`, the experiments;
* :mod:`.training`   SAE training and fine-tuning, RMU;
* :mod:`.server`     the HTTP model server, its schemas and its client (torch-free);
* :mod:`.cli`        ``python -m unlearn_core``;
* :mod:`.ui`         the Streamlit app's views (torch-free: they talk to the server).

The names below are the small public API, imported on first use (so that importing the
torch-free client or UI never loads torch).
"""

from __future__ import annotations

import importlib
import os

# Before torch is imported (it reads this once): let idle OpenMP threads sleep instead of spinning.
# On a shared 2-core machine (a server beside the app, a test beside a server, two test workers)
# spinning threads starve each other. `python bench/omp_policy.py --questions 10` (AMD EPYC, 2 cores):
# seconds per cloze question, ACTIVE / PASSIVE: quiet 0.529 / 0.674, one busy process beside it
# 1.339 / 0.722. A single process on a quiet machine can set OMP_WAIT_POLICY=ACTIVE (27% faster).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_PUBLIC = {
    "Settings": "unlearn_core.core.settings",
    "load_settings": "unlearn_core.core.settings",
    "Engine": "unlearn_core.model.engine",
    "load_engine": "unlearn_core.model.engine",
    "tiny_engine": "unlearn_core.model.tiny",
    "Intervention": "unlearn_core.method.interventions",
    "Target": "unlearn_core.evaluation.targets",
    "load_targets": "unlearn_core.evaluation.targets",
    "default_intervention": "unlearn_core.evaluation.targets",
    "UnlearnClient": "unlearn_core.server.client",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'unlearn_core' has no attribute {name!r}")
