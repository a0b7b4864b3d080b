"""Does the clamped model still *say* the fact in free text, and is what it says text at all?

Why: the multiple-choice flip can hide two things a stakeholder cares about. A model may pick
another letter and still write the answer when asked openly; or its free text may break down
("The building of the city of the future.") and look like forgetting when it is damage. So the
demo also generates: for the first known forget question (in file order, train half) whose
clean greedy answer contains the answer's keyword, it generates again with the clamp and says
whether the keyword is still there, flagging degenerate output by two measured criteria:

* repetitive: at least ``MIN_WORDS`` words of which fewer than ``MIN_DISTINCT`` are distinct;
* off-topic: the clean model's mean negative log-likelihood of the clamped continuation, given
  the prompt, above ``OFF_TOPIC_NLL`` nats per token (a fluent wrong answer stays below it; text
  unrelated to the question does not). The threshold is measured by
  ``bench/generation_offtopic.py`` on the train half (see there).
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, ContextManager

import torch

from unlearn_core.data.loaders import Question
from unlearn_core.evaluation.metrics import generate
from unlearn_core.evaluation.verdicts import GenerationCheck, generation_verdict
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.engine import Engine

NEW_TOKENS = 12  # a short answer, not an essay: the keyword comes early or not at all
MAX_CANDIDATES = 8  # known questions tried for a prompt the clean model completes with the fact
MIN_WORDS, MIN_DISTINCT = 6, 0.5
# nats/token: `bench/generation_offtopic.py --questions 40` (2026-12-07, AMD EPYC, 2 cores) on 40 known
# train-half questions: own answers median 0.77 (max 1.52), another question's answer median 2.44
# (min 0.66); NLL > 1.27 puts 94% of the 80 on the right side
OFF_TOPIC_NLL = 1.27
WORD = re.compile(r"[A-Za-z][A-Za-z-]+")


def fact_prompt(q: Question) -> str:
    """The question in the cloze prompt's own format, asking for a free-text answer."""
    return f"Question: {q.question}\nAnswer:"


def answer_keyword(q: Question) -> str | None:
    """The correct answer's most distinctive word: the longest of its words of 4+ letters that is
    in no other choice and not in the question (case-insensitive); None when there is none."""
    others = " ".join(c for i, c in enumerate(q.choices) if i != q.answer).lower() + " " + q.question.lower()
    words = [w for w in WORD.findall(q.correct_text) if len(w) >= 4 and w.lower() not in others]
    return max(words, key=len).lower() if words else None


def says(text: str, keyword: str) -> bool:
    return keyword.lower() in text.lower()


@torch.inference_mode()
def continuation_nll(engine: Engine, prompt: str, continuation: str) -> float:
    """The clean model's mean negative log-likelihood per token of ``continuation`` after ``prompt``."""
    model = engine.model
    p = model.to_tokens(prompt, prepend_bos=True)
    c = model.to_tokens(continuation, prepend_bos=False)
    if c.shape[1] == 0:
        return 0.0
    logits = model(torch.cat([p, c], dim=1))
    logp = torch.log_softmax(logits[0, p.shape[1] - 1 : -1].float(), dim=-1)
    return float(-logp.gather(1, c[0].unsqueeze(1)).mean())


def degenerate_reason(nll: float, text: str) -> str | None:
    words = WORD.findall(text)
    if not words:
        return "empty"
    if len(words) >= MIN_WORDS and len({w.lower() for w in words}) / len(words) < MIN_DISTINCT:
        return "repetitive"
    if nll > OFF_TOPIC_NLL:
        return "off-topic"
    return None


def check_generation(
    engine: Engine,
    questions: list[Question],
    iv: Intervention,
    new_tokens: int = NEW_TOKENS,
    guard: Callable[[], ContextManager] = contextlib.nullcontext,
) -> GenerationCheck | None:
    """The check on the first of ``questions`` (in order; at most ``MAX_CANDIDATES`` tried) whose
    clean greedy answer names its keyword: free text the model knows. None when none does.
    ``guard`` is entered around each generation (the server's model lock)."""
    for q in questions[:MAX_CANDIDATES]:
        kw = answer_keyword(q)
        if kw is None:
            continue
        prompt = fact_prompt(q)
        with guard():
            clean = generate(engine, prompt, None, max_new_tokens=new_tokens)
        if not says(clean, kw):
            continue
        with guard():
            clamped = generate(engine, prompt, [iv], max_new_tokens=new_tokens)
            nll = continuation_nll(engine, prompt, clamped)
        bad, said = degenerate_reason(nll, clamped), says(clamped, kw)
        return GenerationCheck(q.id, prompt, kw, clean, clamped, True, said, nll, bad, generation_verdict(bad, said))
    return None
