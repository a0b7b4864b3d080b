"""How the bench cuts its model work into holds of the server's model lock (``bench.Inputs.run``).

Questions are scored ``SCORE_STEP`` to a hold: ``mcq.score_questions``' own batches, so the CLI,
which scores in the same chunks, gives the same numbers. Why not fewer for long prompts: since
cloze scoring runs each question's prefix once (``evaluation.cloze_cached``), 8 few-shot:8
prompts take about 4 s (0.47-0.52 s each, ``bench/attack_speed.py`` on a loaded 2-core AMD EPYC),
about one relearn training step; scored one per hold (the rule before), the few-shot and filler
rows lost most of that speed-up (the whole bench: 837 s against 417 s, every outcome equal).
"""

from __future__ import annotations

from typing import TypeVar

SCORE_STEP = 8

T = TypeVar("T")


def score_chunks(qs: list[T]) -> list[list[T]]:
    """``qs`` in order, in runs of up to ``SCORE_STEP``."""
    return [qs[s : s + SCORE_STEP] for s in range(0, len(qs), SCORE_STEP)]
