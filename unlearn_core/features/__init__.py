"""Which SAE features carry a topic, and the targets that name one.

* :mod:`.stats`            per-feature statistics on a corpus, dashboards, frequency selection;
* :mod:`.specificity`      specificity scores against a background corpus;
* :mod:`.text_search`      features by text, ranked by activation or specificity (search selection);
* :mod:`.descriptions`     automatic descriptions from max-activating contexts;
* :mod:`.neuronpedia`      the Neuronpedia API (cached; offline-aware);
* :mod:`.selection_phrase` one sentence that says how a target selects;
* :mod:`.default_target`, :mod:`.target_limits` torch-free names and limits the UI shares.

Below :mod:`unlearn_core.method` (the gate calibrates on these statistics); the targets that
combine a selection with an intervention and its evaluation live in
:mod:`unlearn_core.evaluation.targets`.
"""
