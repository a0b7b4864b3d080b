"""The verdict rule (issue 35, defect 1): "kept" is still right *and* about as sure."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from unlearn_core.cli.demo import demo_text
from unlearn_core.data.loaders import Question
from unlearn_core.evaluation import demo as DM
from unlearn_core.evaluation.verdicts import KEEP_TOLERANCE, verdict, verdict_of


def probs(p_right: float, right: int = 1, other: int = 0) -> list[float]:
    out = [0.0] * 4
    out[right] = p_right
    out[other] = 1.0 - p_right
    return out


@pytest.mark.parametrize(
    "clean, clamped, kind",
    [
        ((0.75, 1), (0.12, 0), "forgotten"),
        ((0.57, 1), (0.54, 1), "kept"),  # the live demo's Miss Marple, 2026-12-07: a 0.03 drop
        ((0.57, 1), (0.42, 1), "less_sure"),  # the walkthrough's Miss Marple: right, 0.15 less sure
        ((0.57, 1), (0.57 - KEEP_TOLERANCE, 1), "kept"),  # the tolerance itself still counts as kept
        ((0.50, 1), (0.90, 1), "kept"),  # surer than clean is kept
        ((0.30, 0), (0.60, 1), "now_right"),
        ((0.30, 0), (0.20, 0), "still_wrong"),
    ],
)
def test_verdict_kinds_on_hand_made_scores(clean, clamped, kind):
    (p0, pred0), (p1, pred1) = clean, clamped
    v = verdict(1, probs(p0, 1, 0 if pred0 == 1 else 0), pred0, probs(p1), pred1)
    assert v.kind == kind
    assert (v.p_clean, v.p_clamped) == pytest.approx((p0, p1))


def test_the_less_sure_sentence_never_claims_the_answer_was_left_alone():
    v = verdict(1, probs(0.57), 1, probs(0.42), 1)
    assert v.sentence().startswith("Still right, but less sure: P(correct) 0.57 → 0.42")
    assert "alone" not in v.sentence() and "Kept" not in v.sentence()
    assert v.label() == "still right, but less sure (0.57 → 0.42)"


def _score(p_right: float, right: bool) -> SimpleNamespace:
    ps = probs(p_right) if right else probs(1.0 - p_right, 0, 1)
    pred = 1 if right else 0
    return SimpleNamespace(
        correct=right, probs=ps, predicted=pred, to_dict=lambda: {"probs": ps, "predicted": pred, "correct": right}
    )


def test_the_demo_prefers_a_kept_retain_question_and_says_so_when_there_is_none(monkeypatch):
    """The scan returns the first *kept* retain question even after a less-sure one; with none kept,
    the first still-right one, and the summary and CLI text call it less sure."""
    qs = [Question(f"q{i}", f"Q{i}?", ("a", "b", "c", "d"), 1, "t", "s") for i in range(3)]
    clamped = {"q0": _score(0.40, True), "q1": _score(0.78, True), "q2": _score(0.70, True)}

    def scores(engine, batch, ivs=None, scoring=None, batch_size=8):  # known strongly; blanked: wrong
        return [clamped[q.id] if ivs else _score(0.80, not q.id.endswith("#blank")) for q in batch]

    monkeypatch.setattr(DM, "score_questions", scores)
    guard = lambda n: contextlib.nullcontext()  # noqa: E731
    ex, n = DM._scan(None, qs, None, "cloze", 0.5, DM.RETAIN_WANT, guard, None)
    assert (ex["question"]["id"], n, ex["verdict"]["kind"]) == ("q1", 2, "kept")
    ex, n = DM._scan(None, qs[:1], None, "cloze", 0.5, DM.RETAIN_WANT, guard, None)
    assert (ex["question"]["id"], ex["verdict"]["kind"]) == ("q0", "less_sure")
    forgotten = {**ex, "intervened": _score(0.9, False).to_dict()}
    forgotten["verdict"] = verdict_of(forgotten).to_dict()
    assert "no checked general-knowledge question was kept as sure" in DM.summary(forgotten, ex, 1)
    out = {
        "target": "t",
        "description": "d",
        "intervention": {"mode": "clamp", "features": [1], "sae": "s", "c": 400.0},
        "forget_corpus": "f",
        "retain_corpora": ["r"],
        "forget_example": forgotten,
        "retain_example": ex,
        "n_checked_forget": 1,
        "summary": DM.summary(forgotten, ex, 1),
    }
    text = demo_text(out)
    assert "(wrong: forgotten)" in text and "(still right, but less sure (0.80 → 0.40))" in text
    assert "(kept)" not in text
