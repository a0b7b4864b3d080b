"""Experiments that produce the docs' results tables.

* :mod:`.writeups` the WMDP-bio and book experiments of the two write-ups;
* :mod:`.target_sweep` the targets sweep and ``target eval``;
* :mod:`.gate`     static vs gated clamp, and the filler probe;
* :mod:`.rmu`      RMU against the clamps.
"""
