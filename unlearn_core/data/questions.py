"""The one multiple-choice question schema every loader returns (WMDP's, plus where it came from).

Kept free of imports from the rest of the package so that loaders, scoring and targets can all
depend on it without cycles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str
    source: str
    # Fields a question file carries beyond the schema (the quizzes' kind, topic, overlaps_bio...):
    # kept so filters and reports can use them; not part of identity or equality.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.choices) != 4:
            raise ValueError(f"question {self.id}: expected 4 choices, got {len(self.choices)}")
        if not 0 <= self.answer < 4:
            raise ValueError(f"question {self.id}: answer index {self.answer} out of range")

    def reordered(self, perm: tuple[int, ...]) -> "Question":
        """The same question with choices in order ``perm`` (new position j shows old choice perm[j])."""
        return Question(
            id=f"{self.id}@{''.join(map(str, perm))}",
            question=self.question,
            choices=tuple(self.choices[p] for p in perm),
            answer=perm.index(self.answer),
            subject=self.subject,
            source=self.source,
            extra=self.extra,
        )

    def blanked(self) -> "Question":
        """The question with its text removed: what a model gets right here is answer bias, not
        knowledge (the stricter known filter of ``method.md``)."""
        return Question(
            id=f"{self.id}#blank",
            question="",
            choices=self.choices,
            answer=self.answer,
            subject=self.subject,
            source=self.source,
            extra=self.extra,
        )

    @property
    def correct_text(self) -> str:
        return self.choices[self.answer]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d


@dataclass
class QuestionSet:
    """Questions plus where they came from; ``label`` is shown to users (fallbacks say so)."""

    name: str
    questions: list[Question]
    origin: str
    label: str = ""
    is_fallback: bool = False
    notes: list[str] = field(default_factory=list)


def questions_digest(questions: list[Question]) -> str:
    """A digest of what scoring reads from each question, in order: id, text, choices, answer and
    subject. Caches of per-question results are keyed by it, never by the ids alone: a file whose
    typo was fixed, or two files that both number their questions 1, 2, 3, must not share entries."""
    rows = [[q.id, q.question, list(q.choices), q.answer, q.subject] for q in questions]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def question_text(q: Question) -> str:
    """The question with lettered options (the paper's stand-in text for the WMDP forget corpus)."""
    return q.question + "\n" + "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, q.choices))


def fact_text(q: Question) -> str:
    """The question and its correct answer in the cloze prompt's own format: a quiz as forget or
    retain text (format-matched selection compares two such corpora)."""
    return f"Question: {q.question}\nAnswer: {q.correct_text.strip()}"
