"""The language model and its SAEs, loaded and run.

* :mod:`.models`           model loading (the embedded Gemma 3 270M, TransformerLens names);
* :mod:`.saes`             SAE loading (the shipped SAE, local folders, SAELens releases);
* :mod:`.engine`           ``Engine``: model + SAEs + settings, what every entry point shares;
* :mod:`.forward`          tokenizing, padding, forward passes to a hook, unembedding;
* :mod:`.fast_blocks`      fused CPU blocks (exact) for the embedded model;
* :mod:`.tiny`             a tiny random model and SAE built from a config (tests, ``--tiny``).
"""
