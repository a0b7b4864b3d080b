"""Which SAE features carry a topic, and the targets that name one.

* :mod:`.stats`            per-feature statistics on a corpus, dashboards, frequency selection;
* :mod:`.specificity`      features by specificity to a query text (search selection);
* :mod:`.descriptions`     automatic descriptions from max-activating contexts;
* :mod:`.neuronpedia`      the Neuronpedia API (cached; offline-aware);
* :mod:`.targets`          unlearning targets (``assets/targets.toml``): corpora, questions,
  selection and default intervention;
* :mod:`.selection_phrase` one sentence that says how a target selects.
"""
