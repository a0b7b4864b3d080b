"""The guided demo: one question the model knows, forgotten; one general question, kept.

Shared by ``python -m unlearn_core demo``, ``scripts/run.sh`` and the app's Home page. It scans
the target's forget questions in file order for one the clean model knows strongly (correct,
P(correct) >= ``min_conf``, and not correct with the question blanked) whose answer the
default intervention flips, and says so when there is none. The retain question is the first
known retain question the clamp keeps (``verdicts``: still right and P(correct) within the
tolerance); when none is, the first that stays right at all, with its honest verdict ("less
sure"). Scanning is lazy: a few seconds, not a full known filter.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from unlearn_core.data import loaders as D
from unlearn_core.evaluation.demo_limits import MAX_SCAN
from unlearn_core.evaluation.mcq import score_questions
from unlearn_core.evaluation.targets import Target, default_intervention, engine_target, forget_corpus_for
from unlearn_core.evaluation.verdicts import verdict_of
from unlearn_core.features.default_target import DEFAULT_TARGET

CHUNK = 8  # questions scored in one batched forward: 2.5x faster than one at a time on 2 CPU cores


CHUNK = 8  # questions scored in one batched forward: 2.5x faster than one at a time on 2 CPU cores


def _chunk_examples(engine, qs: list[D.Question], iv, scoring: str, min_conf: float, guard, skip) -> list:
    """(index in ``qs``, example) of each question of a chunk the clean model knows strongly
    (right, P(correct) >= ``min_conf``, and wrong with the question blanked), in order: three
    batched passes, each inside ``guard(n)`` (n: the questions it settles, for progress)."""
    with guard(len(qs)):
        idx = [i for i, q in enumerate(qs) if skip is None or not skip(engine, q)]
        base = dict(zip(idx, score_questions(engine, [qs[i] for i in idx], scoring=scoring, batch_size=CHUNK)))
    sure = [i for i in idx if base[i].correct and base[i].probs[qs[i].answer] >= min_conf]
    with guard(0):
        blanked = score_questions(engine, [qs[i].blanked() for i in sure], scoring=scoring, batch_size=CHUNK)
    strong = [i for i, x in zip(sure, blanked) if not x.correct]
    with guard(0):
        inter = score_questions(engine, [qs[i] for i in strong], [iv], scoring=scoring, batch_size=CHUNK)
    return [(i, _example(qs[i], base[i], x)) for i, x in zip(strong, inter)]


def _example(q: D.Question, base, inter) -> dict:
    ex = {"question": q.to_dict(), "base": base.to_dict(), "intervened": inter.to_dict()}
    return {**ex, "verdict": verdict_of(ex).to_dict()}


def _scan(
    engine,
    questions: list[D.Question],
    iv,
    scoring: str,
    min_conf: float,
    want: tuple[str, ...],
    guard: Callable[[int], ContextManager],
    skip: Callable | None,
) -> tuple[dict | None, int]:
    """The first question known strongly whose verdict is ``want[0]``, else the first whose verdict
    is another of ``want``; and how many were checked (up to the one returned, in file order).
    Questions are scored ``CHUNK`` at a time; ``guard(n)`` is entered around each batched pass
    (the server's lock; n questions settled, for its progress)."""
    fallback = None
    for s in range(0, len(questions), CHUNK):
        for j, ex in _chunk_examples(engine, questions[s : s + CHUNK], iv, scoring, min_conf, guard, skip):
            if ex["verdict"]["kind"] == want[0]:
                return ex, s + j + 1
            if fallback is None and ex["verdict"]["kind"] in want:
                fallback = ex
    return fallback, len(questions)


def find_examples(
    engine,
    target: Target,
    iv,
    min_conf: float = 0.5,
    max_scan: int = MAX_SCAN,
    progress: Callable[[int, str], None] | None = None,
    guard: Callable[[int], ContextManager] = lambda n: contextlib.nullcontext(),
    load: Callable[[str], list[D.Question]] | None = None,
    skip: Callable | None = None,
) -> dict:
    """The forget example (a known question the clamp flips) and the retain example (a known one
    it keeps). The server passes its lock as ``guard`` (entered per chunk of n questions), its
    cached question sets as ``load`` and ``skip`` for prompts longer than the model's context."""
    scoring = target.scoring or engine.scoring
    load = load or (lambda spec: D.load_question_set(spec, engine.settings.data_dir).questions)

    def scan(spec: str, want: tuple[str, ...]) -> tuple[dict | None, int]:
        return _scan(engine, load(spec)[:max_scan], iv, scoring, min_conf, want, guard, skip)

    forget, n_f = scan(target.forget_questions, ("forgotten",))
    if progress:
        progress(n_f, f"checked {n_f} forget question(s)")
    retain, n_r = scan(target.retain_questions[0], RETAIN_WANT)
    return {"forget_example": forget, "retain_example": retain, "n_checked_forget": n_f, "n_checked_retain": n_r}


RETAIN_WANT = ("kept", "less_sure")  # a kept retain question, else one that at least stays right


def summary(forget: dict | None, retain: dict | None, n_forget: int) -> str:
    if forget and retain and retain["verdict"]["kind"] == "kept":
        return (
            "The clamp made the model forget a fact it knew (its answer flipped) while a general-knowledge "
            "question stayed right and about as sure."
        )
    if forget and retain:
        return (
            "The clamp made the model forget a fact it knew (its answer flipped), but no checked general-knowledge "
            f"question was kept as sure: the first that stayed right is {retain['verdict']['label']}."
        )
    if forget:
        return "The clamp flipped a known forget question, but no checked retain question stayed right."
    return f"The default intervention flipped none of the first {n_forget} forget questions the model knows strongly."


def generation(engine, target: Target, iv, guard=contextlib.nullcontext, load=None) -> dict | None:
    """The free-text check (``generation_check``) on the train half of the target's forget
    questions: does the clamped model still write the answer, and is its text text at all."""
    from unlearn_core.data.specs import with_part
    from unlearn_core.evaluation.generation_check import check_generation

    load = load or (lambda spec: D.load_question_set(spec, engine.settings.data_dir).questions)
    g = check_generation(engine, load(with_part(target.forget_questions, "train")), iv, guard=guard)
    return g.to_dict() if g else None


def result(engine, target: Target, iv, found: dict, gen: dict | None = None) -> dict:
    """The demo's answer: what was done, the two examples (or None) and one sentence about them."""
    forget_corpus, note = forget_corpus_for(target, engine.settings.data_dir)
    return {
        "target": target.name,
        "description": target.description,
        "forget_corpus": forget_corpus,
        "forget_corpus_note": note,
        "retain_corpora": list(target.retain_corpora),
        "intervention": {
            "sae": iv.sae_key,
            "mode": iv.mode,
            "c": iv.c,
            "features": list(iv.features),
            "scales": list(iv.scales) if iv.scales is not None else None,
            "gate": iv.gate,
        },
        **found,
        "generation": gen,
        "summary": summary(found["forget_example"], found["retain_example"], found["n_checked_forget"]),
    }


def run_demo(
    engine,
    target_name: str = DEFAULT_TARGET,
    progress: Callable[[int, str], None] | None = None,
    stats_progress: Callable[[int], None] | None = None,
) -> dict:
    """``stats_progress`` is told of every token of the selection statistics (first run only:
    they are cached on disk)."""
    target = engine_target(engine, target_name)
    if progress:
        progress(0, f"selecting {target.name} features ({target.forget_corpus} vs {', '.join(target.retain_corpora)})")
    iv = default_intervention(engine, target, progress=stats_progress)
    found = find_examples(engine, target, iv, progress=progress)
    if progress:
        progress(0, "generating: the clean and the clamped model answer a question in free text")
    return result(engine, target, iv, found, generation(engine, target, iv))
