"""The unlearning method: SAE feature interventions at a hook.

* :mod:`.interventions` the clamp (the paper's "-c where active", error term kept) and the other
  modes, as hooks;
* :mod:`.gate`          the gated clamp (DSG-style): a per-prompt decision from the features' rho;
* :mod:`.fastpath`      the same interventions scored from the hook on (exact, for the slider).
"""
