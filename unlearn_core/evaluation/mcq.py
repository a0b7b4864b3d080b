"""Multiple-choice scoring: letter and cloze scoring, the known filter (prompts and orderings: ``prompts``).

Letter scoring (instruct models): softmax over the full vocabulary at the last prompt position;
a letter's probability is the max over its token variants ("A", " A"). Cloze scoring (base
models, the embedded default): mean log-likelihood of each answer's text after the question;
it does not depend on the order of the options.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unlearn_core.core import cache as C
from unlearn_core.data.loaders import Question
from unlearn_core.data.prompts import (  # noqa: F401 (re-exported:
    GEMMA_CHAT,
    ORDERINGS,
    MCQScore,
    all_orderings,
    cloze_prefix,
    format_prompt,  # callers use mcq)
    letter_token_ids,
    mcq_body,
    scored_texts,
    subject_name,
)
from unlearn_core.data.questions import questions_digest
from unlearn_core.method.interventions import Intervention, gate_prompt
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import final_resid, last_positions, pad_right, target_logprobs, tokenize, unembed


@torch.inference_mode()
def letter_probs_batch(engine: Engine, prompts: list[str], fwd_hooks=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Letter probabilities [B, 4] (max over variants, full-vocab softmax) and mass [B]."""
    model = engine.model
    tokens, lens = tokenize(model, prompts)
    resid = final_resid(model, tokens, fwd_hooks)
    logits = unembed(model, last_positions(resid, lens)).float()
    logp = torch.log_softmax(logits, -1)
    variants = letter_token_ids(model.tokenizer)
    probs = torch.stack([logp[:, ids].exp().max(-1).values for ids in variants], -1)
    return probs.cpu(), probs.sum(-1).cpu()


@torch.inference_mode()
def cloze_logliks(engine: Engine, q: Question, fwd_hooks=()) -> torch.Tensor:
    """Mean log-likelihood of each choice's tokens after the question prefix, shape [4]."""
    model = engine.model
    tok = model.tokenizer
    prefix = [tok.bos_token_id] + tok(cloze_prefix(q), add_special_tokens=False)["input_ids"]
    conts = [tok(" " + c.strip(), add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for c in q.choices]
    rows = [prefix + c for c in conts]
    tokens, lens = pad_right(rows, tok.pad_token_id or 0)
    P = len(prefix)
    with gate_prompt(P):  # a gate decides on the question, and every answer row follows it
        resid = final_resid(model, tokens, fwd_hooks)
    # one unembedding for all four answers (each call reads the whole of W_U)
    r = torch.cat([resid[i, P - 1 : P - 1 + len(c)] for i, c in enumerate(conts)])
    tok_lp = target_logprobs(model, r, torch.tensor([t for c in conts for t in c]))
    return torch.stack([part.mean() for part in tok_lp.split([len(c) for c in conts])]).cpu()


def score_questions(
    engine: Engine,
    questions: list[Question],
    interventions: list[Intervention] | None = None,
    scoring: str | None = None,
    style: str | None = None,
    batch_size: int = 8,
    progress=None,
) -> list[MCQScore]:
    scoring = scoring or engine.scoring
    style = style or engine.prompt_format
    hooks = engine.hooks(interventions)
    out: list[MCQScore] = []
    if scoring == "letter":
        for s in range(0, len(questions), batch_size):
            qs = questions[s : s + batch_size]
            probs, mass = letter_probs_batch(
                engine, [format_prompt(q, style, engine.model.tokenizer) for q in qs], hooks
            )
            out += [MCQScore.letter(p, m, q.answer) for q, p, m in zip(qs, probs, mass)]
            if progress:
                progress(len(qs))
    elif scoring == "cloze":
        for q in questions:
            out.append(MCQScore.cloze(cloze_logliks(engine, q, hooks), q.answer))
            if progress:
                progress(1)
    else:
        raise ValueError(f"scoring must be 'letter' or 'cloze', got {scoring!r}")
    return out


def score_question(engine: Engine, q: Question, interventions=None, scoring=None, style=None) -> MCQScore:
    return score_questions(engine, [q], interventions, scoring, style)[0]


def accuracy(scores: list[MCQScore]) -> float:
    return sum(s.correct for s in scores) / len(scores) if scores else float("nan")


def known_path(
    engine: Engine,
    questions: list[Question],
    strict: bool = False,
    scoring: str | None = None,
    style: str | None = None,
) -> Path:
    """The disk cache entry of :func:`known_questions` (the server's stepped filter shares it)."""
    return C.entry_path(
        engine.settings.cache_dir,
        "known",
        engine.cache_identity(),
        scoring or engine.scoring,
        style or engine.prompt_format,
        questions_digest(questions),
        strict,
    )


def known_questions(
    engine: Engine,
    questions: list[Question],
    scoring: str | None = None,
    style: str | None = None,
    use_cache: bool = True,
    progress=None,
    strict: bool = False,
) -> list[Question]:
    """Questions the clean model answers correctly in all 24 orderings (letter scoring).

    Cloze scoring is order-invariant, so one pass decides it. With ``strict`` (the paper's
    stricter variant) a question is also dropped when the model answers it correctly with the
    question text removed (in the original order): that is answer bias, not knowledge.
    Cached on disk per model + dtype + scoring + prompt style + strictness + question set.
    """
    scoring = scoring or engine.scoring
    style = style or engine.prompt_format
    path = known_path(engine, questions, strict, scoring, style)

    def compute() -> list[str]:
        known = []
        for q in questions:
            variants = all_orderings(q) if scoring == "letter" else [q]
            scores = score_questions(engine, variants, scoring=scoring, style=style, batch_size=8)
            ok = all(s.correct for s in scores)
            if ok and strict:
                ok = not score_questions(engine, [q.blanked()], scoring=scoring, style=style)[0].correct
            if ok:
                known.append(q.id)
            if progress:
                progress(1)
        return known

    ids = set(C.cached_json(path, compute) if use_cache else compute())
    return [q for q in questions if q.id in ids]


def score_curve(
    engine: Engine,
    q: Question,
    interventions: list[Intervention],
    values: list[float],
    scoring: str | None = None,
    style: str | None = None,
) -> list[MCQScore]:
    """Scores of one question with the clamp value of every intervention set to each of ``values``.

    This is the entry point of the clamp slider and the probability-vs-c curve; the fast path
    (``fastpath``) serves it when available and must give the same numbers.
    """
    from dataclasses import replace

    from unlearn_core.method import fastpath

    if fastpath.supports(engine, interventions, scoring or engine.scoring):
        return fastpath.score_curve(
            engine, q, interventions, values, scoring or engine.scoring, style or engine.prompt_format
        )
    return [
        score_question(engine, q, [replace(iv, value=float(v)) for iv in interventions], scoring, style) for v in values
    ]


def score_base(
    engine: Engine,
    q: Question,
    interventions: list[Intervention] | None = None,
    scoring: str | None = None,
    style: str | None = None,
) -> MCQScore:
    """The clean score; read from the fast path's per-question cache when the interventions
    about to be scored can use it (so a slider move never recomputes the clean model)."""
    from unlearn_core.method import fastpath

    scoring, style = scoring or engine.scoring, style or engine.prompt_format
    if interventions and fastpath.supports(engine, interventions, scoring):
        return fastpath.base_score(engine, q, scoring, style, interventions[0].sae_key)
    return score_question(engine, q, None, scoring, style)
