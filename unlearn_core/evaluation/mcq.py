"""Multiple-choice scoring: letter and cloze scoring, the known filter (prompts and orderings: ``prompts``).

Letter scoring (instruct models): softmax over the full vocabulary at the last prompt position;
a letter's probability is the max over its token variants ("A", " A"). Cloze scoring (base
models, the embedded default): mean log-likelihood of each answer's text after the question;
it does not depend on the order of the options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

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


def cloze_rows(tokenizer, q: Question) -> tuple[list[int], list[list[int]]]:
    """A question's cloze tokens: BOS + the prefix, and each choice's tokens after it."""
    tok = tokenizer
    prefix = [tok.bos_token_id] + tok(cloze_prefix(q), add_special_tokens=False)["input_ids"]
    conts = [tok(" " + c.strip(), add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for c in q.choices]
    return prefix, conts


@torch.inference_mode()
def cloze_logliks_batch(engine: Engine, questions: list[Question], fwd_hooks=()) -> list[torch.Tensor]:
    """Per question, the mean log-likelihood of each choice's tokens after its prefix, [4] each.

    All questions' rows (prefix + choice) go through one forward, and all their answer tokens
    through one pass of the unembedding: on a CPU, reading the 262k x 640 W_U (671 MB in fp32)
    costs more than one question's blocks, so a batch of 8 questions costs 2.5x less per question
    than one at a time (``bench/cloze_batch.py``). A gate counts each row's own prefix
    (``gate_prompt`` per row): every answer row of a question follows its question's decision.
    """
    if not questions:
        return []
    model = engine.model
    rows, plens, conts = [], [], []
    for q in questions:
        prefix, cs = cloze_rows(model.tokenizer, q)
        rows += [prefix + c for c in cs]
        plens += [len(prefix)] * len(cs)
        conts += cs
    tokens, _ = pad_right(rows, model.tokenizer.pad_token_id or 0)
    with gate_prompt(plens):
        resid = final_resid(model, tokens, fwd_hooks)
    r = torch.cat([resid[i, P - 1 : P - 1 + len(c)] for i, (P, c) in enumerate(zip(plens, conts))])
    tok_lp = target_logprobs(model, r, torch.tensor([t for c in conts for t in c]), chunk=256)
    means = torch.stack([part.mean() for part in tok_lp.split([len(c) for c in conts])]).cpu()
    return list(means.split([len(q.choices) for q in questions]))


def cloze_logliks_auto(
    engine: Engine, questions: list[Question], interventions=None, fwd_hooks=()
) -> list[torch.Tensor]:
    """``cloze_logliks_batch``'s numbers, a long-prefix question (few-shot, filler) through the
    cached path that runs its prefix once (``cloze_cached``), the others batched row by row
    (``fwd_hooks``: ``interventions``' hooks, for that path)."""
    from unlearn_core.evaluation import cloze_cached as CC

    rows = [cloze_rows(engine.model.tokenizer, q) for q in questions]
    long = [i for i, (prefix, _) in enumerate(rows) if CC.use_cache(engine.model, len(prefix))]
    if not long:
        return cloze_logliks_batch(engine, questions, fwd_hooks)
    short = [i for i in range(len(questions)) if i not in set(long)]
    out: dict[int, torch.Tensor] = dict(zip(long, CC.cached_logliks(engine, [rows[i] for i in long], interventions)))
    out.update(zip(short, cloze_logliks_batch(engine, [questions[i] for i in short], fwd_hooks)))
    return [out[i] for i in range(len(questions))]


def cloze_logliks(engine: Engine, q: Question, fwd_hooks=()) -> torch.Tensor:
    """Mean log-likelihood of each choice's tokens after the question prefix, shape [4]."""
    return cloze_logliks_batch(engine, [q], fwd_hooks)[0]


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
        for s in range(0, len(questions), batch_size):
            qs = questions[s : s + batch_size]
            lls = cloze_logliks_auto(engine, qs, interventions, hooks)
            out += [MCQScore.cloze(ll, q.answer) for q, ll in zip(qs, lls)]
            if progress:
                progress(len(qs))
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
        known: list[str] = []
        for step in known_filter_steps(questions, scoring, style, strict, known, progress):
            step(engine)
        return known

    ids = set(C.cached_json(path, compute) if use_cache else compute())
    return [q for q in questions if q.id in ids]


def known_filter_steps(
    questions: list[Question],
    scoring: str,
    style: str,
    strict: bool,
    known: list[str],
    tick: Callable[[int], None] | None = None,
) -> Iterator[Callable[[Engine], None]]:
    """The known filter as steps (each a callable given the engine, a fraction of a second on a
    CPU), appending the known questions' ids to ``known`` in order: the server runs them under
    its model lock a few at a time, ``known_questions`` one after another. Letters: a batch of 8
    orderings per step, a question's later orderings skipped once one is wrong (the answer, "all
    correct", is the same). Cloze: 8 questions per step, then (strict) their blanked forms.
    ``tick(n)`` is called as n more questions are decided. A generator: advance it only after
    running the step it gave (later steps read earlier results)."""
    if scoring == "letter":
        for q in questions:
            variants, ok = all_orderings(q), [True]
            for s in range(0, len(variants), 8):

                def part(engine, vs=variants[s : s + 8], ok=ok):
                    ok[0] = all(x.correct for x in score_questions(engine, vs, scoring=scoring, style=style))

                yield part
                if not ok[0]:
                    break
            if ok[0] and strict:

                def blank(engine, q=q, ok=ok):
                    ok[0] = not score_questions(engine, [q.blanked()], scoring=scoring, style=style)[0].correct

                yield blank
            if ok[0]:
                known.append(q.id)
            if tick:
                tick(1)
        return
    if scoring != "cloze":
        raise ValueError(f"scoring must be 'letter' or 'cloze', got {scoring!r}")
    for s in range(0, len(questions), 8):
        qs, right = questions[s : s + 8], []

        def batch(engine, qs=qs, right=right):
            right += [q for q, x in zip(qs, score_questions(engine, qs, scoring=scoring, style=style)) if x.correct]

        yield batch
        if strict and right:
            dropped: set[str] = set()

            def blank_batch(engine, right=right, dropped=dropped):
                blanked = score_questions(engine, [q.blanked() for q in right], scoring=scoring, style=style)
                dropped.update(q.id for q, x in zip(right, blanked) if x.correct)

            yield blank_batch
            right = [q for q in right if q.id not in dropped]
        known += [q.id for q in right]
        if tick:
            tick(len(qs))


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
