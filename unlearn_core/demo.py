"""The guided demo: one question the model knows, forgotten; one general question, kept.

Shared by ``python -m unlearn_core demo``, ``scripts/run.sh`` and the app's Home page. It scans
the target's forget questions in file order for one the clean model knows strongly (correct,
P(correct) >= ``min_conf``, and not correct with the question blanked) whose answer the
default intervention flips, and says so when there is none. The retain question is the first
known retain question that stays right. Scanning is lazy: a few seconds, not a full known filter.
"""
from __future__ import annotations

from typing import Callable

from . import data as D
from .mcq import score_question
from .targets import DEFAULT_TARGET, Target, default_intervention, engine_target, forget_corpus_for

MAX_SCAN = 60


def _known_strongly(engine, q: D.Question, scoring: str, min_conf: float):
    base = score_question(engine, q, scoring=scoring)
    if not base.correct or base.probs[q.answer] < min_conf:
        return None
    if score_question(engine, q.blanked(), scoring=scoring).correct:
        return None
    return base


def _example(q: D.Question, base, inter) -> dict:
    return {"question": q.to_dict(), "base": base.to_dict(), "intervened": inter.to_dict()}


def find_examples(engine, target: Target, iv, min_conf: float = 0.5, max_scan: int = MAX_SCAN,
                  progress: Callable[[int, str], None] | None = None) -> dict:
    scoring = target.scoring or engine.scoring
    data_dir = engine.settings.data_dir
    forget, n_f = None, 0
    for q in D.load_question_set(target.forget_questions, data_dir).questions[:max_scan]:
        n_f += 1
        base = _known_strongly(engine, q, scoring, min_conf)
        if base is None:
            continue
        inter = score_question(engine, q, [iv], scoring=scoring)
        if not inter.correct:
            forget = _example(q, base, inter)
            break
    if progress:
        progress(n_f, f"checked {n_f} forget question(s)")
    retain, n_r = None, 0
    for q in D.load_question_set(target.retain_questions[0], data_dir).questions[:max_scan]:
        n_r += 1
        base = _known_strongly(engine, q, scoring, min_conf)
        if base is None:
            continue
        inter = score_question(engine, q, [iv], scoring=scoring)
        if inter.correct:
            retain = _example(q, base, inter)
            break
    return {"forget_example": forget, "retain_example": retain, "n_checked_forget": n_f, "n_checked_retain": n_r}


def run_demo(engine, target_name: str = DEFAULT_TARGET, progress: Callable[[int, str], None] | None = None,
             stats_progress: Callable[[int], None] | None = None) -> dict:
    """``stats_progress`` is told of every token of the selection statistics (first run only:
    they are cached on disk)."""
    target = engine_target(engine, target_name)
    if progress:
        progress(0, f"selecting {target.name} features ({target.forget_corpus} vs {', '.join(target.retain_corpora)})")
    iv = default_intervention(engine, target, progress=stats_progress)
    out = find_examples(engine, target, iv, progress=progress)
    forget, note = forget_corpus_for(target, engine.settings.data_dir)
    f, r = out["forget_example"], out["retain_example"]
    if f and r:
        summary = ("The clamp made the model forget a fact it knew (its answer flipped) while a general-knowledge "
                   "question stayed right.")
    elif f:
        summary = "The clamp flipped a known forget question, but no checked retain question stayed right."
    else:
        summary = (f"The default intervention flipped none of the first {out['n_checked_forget']} forget questions "
                   "the model knows strongly.")
    return {"target": target.name, "description": target.description, "forget_corpus": forget,
            "forget_corpus_note": note, "retain_corpora": list(target.retain_corpora),
            "intervention": {"sae": iv.sae_key, "mode": iv.mode, "c": iv.c, "features": list(iv.features)},
            **out, "summary": summary}
