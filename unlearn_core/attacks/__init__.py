"""The attack bench: does an unlearning method remove knowledge, or only hide it for one wording?

Probe sets (``data.probes``), question transforms (few-shot, filler), defences (the clamps and
RMU), the recovery arithmetic and the bench that runs every attack against every defence through
one scoring path.
"""
