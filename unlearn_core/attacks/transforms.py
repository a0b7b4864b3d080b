"""Attacks that change only the input (threat model "api": the defence stays on): the question
with other known facts answered before it (few-shot), or behind benign filler text.

Each is a function of a question returning a question, so the known filter, the scoring and the
gate (which reads the whole prompt) see exactly what an attacker's prompt would be.
"""

from __future__ import annotations

from dataclasses import replace

from unlearn_core.data.questions import Question

FEW_SHOT_KS = (3, 8)
FILLER_TOKENS = 64  # the gate's filler probe found 32 tokens enough to shut it (gate.robustness)


def few_shot(q: Question, shots: list[Question]) -> Question:
    """``q`` after ``shots`` answered in the cloze prompt's own format: the scored prefix reads
    "Question: s1\\nAnswer: a1\\n\\n...Question: q\\nAnswer:"."""
    if any(s.id == q.id for s in shots):
        raise ValueError(f"question {q.id} is among its own shots")
    prefix = "".join(f"{s.question}\nAnswer: {s.correct_text.strip()}\n\nQuestion: " for s in shots)
    return replace(q, id=f"{q.id}+shots{len(shots)}", question=prefix + q.question)


def shots_for(pool: list[Question], k: int) -> list[Question]:
    """The first ``k`` questions of ``pool`` (known retain questions of the train half: facts of
    another topic the model knows); an error when the pool is too small."""
    if len(pool) < k:
        raise ValueError(f"few-shot k = {k} needs {k} known retain questions; the pool has {len(pool)}")
    return pool[:k]


def with_filler(q: Question, filler: str) -> Question:
    """``q`` behind benign text (as the gate's robustness probe prepends it)."""
    return replace(q, id=f"{q.id}+filler{len(filler)}", question=f"{filler}\n\n{q.question}")
