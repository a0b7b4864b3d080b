"""Multiple-choice prompts and score records: the text a question is scored on, the 24 orderings,
the letters' token ids.

Pure (no model, no hooks), so both scoring paths use it: ``mcq`` (hooked forwards) and
``fastpath`` (cached prefixes), without either importing the other's module at the top.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from unlearn_core.data.loaders import LETTERS, Question

ORDERINGS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(4)))
GEMMA_CHAT = "<bos><start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"


def subject_name(q: Question) -> str:
    return q.subject.replace("_", " ")


def mcq_body(q: Question) -> str:
    lines = [f"The following are multiple choice questions (with answers) about {subject_name(q)}.", q.question]
    lines += [f"{L}. {c}" for L, c in zip(LETTERS, q.choices)]
    return "\n".join(lines) + "\nAnswer:"


def format_prompt(q: Question, style: str, tokenizer=None) -> str:
    """'plain' (lm-eval style, no template) or 'chat' (the model's chat template, Gemma's by default)."""
    body = mcq_body(q)
    if style == "plain":
        return body
    if style == "chat":
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
        return GEMMA_CHAT.format(prompt=body)
    raise ValueError(f"prompt style must be 'plain' or 'chat', got {style!r}")


def cloze_prefix(q: Question) -> str:
    """What each choice is scored after: the quiz format, or for a fill-in-the-blank probe
    (``extra["probe"] == "fill_blank"``) its sentence stem itself, which the answer completes."""
    if q.extra.get("probe") == "fill_blank":
        return q.question.rstrip()
    return f"Question: {q.question}\nAnswer:"


def scored_texts(q: Question, scoring: str, style: str, tokenizer=None) -> list[str]:
    """The texts a question is scored on, BOS left out: one prompt for letters, one row per choice
    for cloze (question prefix + the choice). The app draws activations on these, so what it shows
    is what the clamp acts on."""
    if scoring == "cloze":
        return [cloze_prefix(q) + " " + c.strip() for c in q.choices]
    bos = getattr(tokenizer, "bos_token", None) or "<bos>"
    return [format_prompt(q, style, tokenizer).removeprefix(bos)]


def letter_token_ids(tokenizer) -> list[list[int]]:
    """For each letter, the ids of its single-token variants ("A", " A")."""
    out = []
    for L in LETTERS:
        ids = []
        for v in (L, " " + L):
            enc = tokenizer.encode(v, add_special_tokens=False)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        if not ids:
            raise ValueError(f"tokenizer has no single-token variant of letter {L!r}")
        out.append(ids)
    return out


@dataclass
class MCQScore:
    probs: list[float]  # four numbers: letter probabilities, or cloze softmax over the four mean log-likelihoods
    mass: float  # letter: total probability on the four letters; cloze: 1.0
    predicted: int
    correct: bool
    scoring: str
    loglik: list[float] | None = None  # cloze only: mean log-likelihood per answer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def letter(cls, probs, mass: float, answer: int) -> "MCQScore":
        """From the four letter probabilities (a tensor) and their total mass: both scoring paths
        (``mcq``'s hooked forwards, ``fastpath``'s cached prefixes) build their records here."""
        pred = int(probs.argmax())
        return cls([float(x) for x in probs], float(mass), pred, pred == answer, "letter")

    @classmethod
    def cloze(cls, loglik, answer: int) -> "MCQScore":
        """From the four answers' mean log-likelihoods (a tensor); their softmax are the probabilities."""
        pred = int(loglik.argmax())
        return cls(
            [float(x) for x in loglik.softmax(-1)], 1.0, pred, pred == answer, "cloze", [float(x) for x in loglik]
        )


def all_orderings(q: Question) -> list[Question]:
    return [q.reordered(p) for p in ORDERINGS]
