"""A target's question-based feature scores (``attribution`` and ``fisher``): which questions, and
the call that computes or reads them.

Both read the TRAIN half of the target's question sets only, the known questions of it (the
target's scoring and strictness), so a default chosen with them is still judged on questions
neither step saw (``eval_part``). Retain: the union of the target's retain sets, each question
once. The work is in phases so a caller can show a bar with its total for each: the known
filter (``train_question_sets`` gives its total), then the scores (one step per known question).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn_core.data import loaders as D
from unlearn_core.data.questions import Question

if TYPE_CHECKING:
    import torch

    from unlearn_core.model.engine import Engine

# ``target`` below is a ``targets.Target``: not imported, since ``targets`` imports this module.


class NoQuestionsError(ValueError):
    """No known forget question in the train half: nothing to score features on."""


def train_spec(spec: str) -> str:
    """The spec's train half; a spec that names another part is refused (these scores never read
    held-out questions)."""
    out = D.with_part(spec, "train")
    if D.split_spec(out)[1] != "train":
        raise ValueError(f"question set {spec!r} names another part; question-based selection reads @train only")
    return out


def _unique(questions: list[Question]) -> list[Question]:
    seen: set[tuple] = set()
    out = []
    for q in questions:
        key = (q.id, q.question, q.choices, q.answer)
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def train_question_sets(engine: Engine, target, load=None) -> tuple[list[Question], list[Question]]:
    """(forget, retain) train-half questions before the known filter. ``load(spec)`` reads a set
    (default: from the data folder; the server passes its in-memory sets)."""
    load = load or (lambda spec: D.load_question_set(spec, engine.settings.data_dir).questions)
    forget = load(train_spec(target.forget_questions))
    retain = _unique([q for spec in target.retain_questions for q in load(train_spec(spec))])
    return forget, retain


def known_train_questions(
    engine: Engine, target, forget: list[Question], retain: list[Question], progress=None
) -> tuple[list[Question], list[Question]]:
    """The known ones of each (cached on disk like every known filter); ``progress(1)`` per question."""
    from unlearn_core.evaluation.mcq import known_questions

    scoring = target.scoring or engine.scoring
    kw = {"scoring": scoring, "strict": target.strict_known, "progress": progress}
    fk = known_questions(engine, forget, **kw)
    rk = known_questions(engine, retain, **kw)
    if not fk:
        raise NoQuestionsError(
            f"target {target.name!r}: the model knows none of the {len(forget)} train-half forget questions "
            f"({target.forget_questions}@train, {scoring} scoring): nothing to score features on"
        )
    return fk, rk


def target_feature_scores(
    engine: Engine,
    target,
    sae_key: str,
    method: str,
    progress=None,
    questions: tuple[list[Question], list[Question]] | None = None,
) -> tuple[dict[str, torch.Tensor], tuple[list[Question], list[Question]]]:
    """(scores, (forget, retain) known questions they were computed on). ``questions``: the known
    train-half questions when the caller has them (else filtered here, with the same ``progress``)."""
    from unlearn_core.features.attribution import feature_scores

    if questions is None:
        questions = known_train_questions(engine, target, *train_question_sets(engine, target), progress=progress)
    forget, retain = questions
    scores = feature_scores(
        engine, sae_key, method, forget, retain, target.scoring or engine.scoring, progress=progress
    )
    return scores, (forget, retain)


def question_selection(engine: Engine, target, sae_key: str, method: str, n: int, progress=None, scores=None):
    """(rows, how) of a question-based selection for ``targets.select_for_target``: the ranked
    rows (``score_ranking``) and which questions they rest on."""
    from unlearn_core.features.score_ranking import rank_by_scores

    values, (fq, rq) = scores or target_feature_scores(engine, target, sae_key, method, progress=progress)
    how = {
        "threshold": None,
        "method": method,
        "scoring": target.scoring or engine.scoring,
        "forget_questions": train_spec(target.forget_questions),
        "retain_questions": [train_spec(s) for s in target.retain_questions],
        "n_forget_questions": len(fq),
        "n_retain_questions": len(rq),
    }
    return rank_by_scores(values, method, n), how
