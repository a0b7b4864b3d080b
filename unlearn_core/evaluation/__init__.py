"""Measuring what an intervention does.

* :mod:`.targets`     unlearning targets (``core/assets/targets.toml``): corpora, questions, the
  selection, the default intervention and its evaluation;
* :mod:`.mcq`         multiple-choice scoring (letters or cloze), the known-questions filter;
* :mod:`.metrics`     loss added, perplexity, generation;
* :mod:`.sweep`       (threshold, N, c) configurations counted over question sets;
* :mod:`.ray_backend` the same sweep on Ray workers;
* :mod:`.sae_eval`    the SAE's own quality (L0, explained variance, delta loss);
* :mod:`.demo`        the quick-start demo (a fact forgotten, another kept);
* :mod:`.experiments` the write-ups' experiments and the targets, gate and RMU comparisons.
"""
