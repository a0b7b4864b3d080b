"""Everything that changes weights: the embedded SAE's training and KL fine-tune, and RMU.

* :mod:`.activation_cache` residual activations cached on disk (float16) for SAE training;
* :mod:`.train_sae`    train the shipped SAE (SAELens BatchTopK on cached activations);
* :mod:`.finetune_sae` fine-tune an SAE's decoder on KL(clean || spliced);
* :mod:`.rmu`          the RMU baseline: runs, deltas and the ``rmu:<name>`` model variant.
"""
