"""The bench's drill-down figures (probabilities, texts) against direct scores, and its model use
through ``Inputs.run`` (the server's lock holds): every forward inside a hold, the same numbers."""

from __future__ import annotations

import json

import pytest

from unlearn_core.attacks import bench as B
from unlearn_core.attacks.defences import Defence
from unlearn_core.data import loaders as D
from unlearn_core.data.probes import link, raw_id
from unlearn_core.evaluation.mcq import known_path, known_questions
from unlearn_core.evaluation.mcq import score_question as _score
from unlearn_core.method.interventions import Intervention

IV = Intervention("tiny", (1, 2, 3), 30.0)


def score(engine, q, ivs=None):
    return _score(engine, q, ivs, scoring="cloze")


def make_inputs(tmp_path, data_dir: str, run=None) -> B.Inputs:
    """Ten quiz:bio questions with a paraphrase and a free-text probe each."""
    bio = D.load_question_set("quiz:bio", data_dir).questions
    sources = bio[:10]
    rows = []
    for q in sources:
        order = [1, 0, 3, 2]
        common = {"source_id": raw_id(q), "choices": [q.choices[i] for i in order], "answer": order.index(q.answer)}
        rows.append({**common, "id": f"{raw_id(q)}.p", "probe": "paraphrase", "question": f"Say: {q.question}"})
        rows.append(
            {**common, "id": f"{raw_id(q)}.g", "probe": "generation", "question": "The answer is", "keywords": ["zzq"]}
        )
    path = tmp_path / "probes.json"
    path.write_text(json.dumps(rows))
    probes = link(D.load_question_set(str(path)).questions, bio, "quiz:bio")
    retain = D.load_question_set("quiz:retain", data_dir).questions
    return B.Inputs(sources, probes, retain[:8], retain[8:20], "cloze", str(path), run=run)


def test_facts_carry_both_texts_and_the_three_probabilities(tiny, tmp_path, shared_data):
    inputs = make_inputs(tmp_path, str(shared_data))
    row = B.run_one(tiny, inputs, Defence("clamp", (IV,)), "rephrase")
    pairs = [(lp.source, lp.probe) for lp in inputs.probes if lp.kind == "paraphrase"]
    assert len(row["facts"]) == len(pairs) == 10
    for f, (o, a) in zip(row["facts"], pairs):
        assert (f["original"], f["attacked"]) == (o.question, a.question)
        assert f["p_clean"] == pytest.approx(score(tiny, o).probs[o.answer], abs=1e-6)
        assert f["p_defended"] == pytest.approx(score(tiny, o, [IV]).probs[o.answer], abs=1e-6)
        assert f["p_attacked"] == pytest.approx(score(tiny, a, [IV]).probs[a.answer], abs=1e-6)
        # the booleans the recovery counts are the same scores' argmax
        assert f["defended_attacked"] == (score(tiny, a, [IV]).predicted == a.answer)
    gen = B.run_one(tiny, inputs, Defence("clamp", (IV,)), "generation")
    assert gen["facts"] and all(f["p_attacked"] is None and f["p_defended"] is not None for f in gen["facts"])
    assert gen["facts"][0]["attacked"] == "The answer is"


def test_through_run_every_forward_is_inside_a_hold_and_the_rows_are_the_same(tiny, tmp_path, shared_data):
    holding = [False]
    holds = [0]

    def run(fn):
        holding[0] = True
        holds[0] += 1
        try:
            return fn(tiny)
        finally:
            holding[0] = False

    outside, inside = [], []
    handle = tiny.model.register_forward_pre_hook(lambda m, a: (inside if holding[0] else outside).append(1))
    try:
        stepped = make_inputs(tmp_path, str(shared_data), run=run)
        d = Defence("clamp", (IV,))
        rows = [B.run_one(tiny, stepped, d, a) for a in ("rephrase", "filler", "generation")]
    finally:
        handle.remove()
    assert inside and not outside, f"{len(outside)} forward pass(es) outside a hold"
    assert holds[0] >= 6  # short holds: holds.score_chunks' chunks, one batch of generations each
    plain = make_inputs(tmp_path, str(shared_data))
    want = [B.run_one(tiny, plain, d, a) for a in ("rephrase", "filler", "generation")]
    for r, w in zip(rows, want):
        r.pop("wall_s"), w.pop("wall_s")
        assert r == w


def test_the_stepped_known_filter_is_known_questions(tiny, shared_data):
    qs = D.load_question_set("quiz:retain", str(shared_data)).questions[20:37]
    want = known_questions(tiny, qs, scoring="cloze", strict=False, use_cache=False)
    known_path(tiny, qs, False, "cloze").unlink(missing_ok=True)
    steps = []
    got = B.known(tiny, lambda fn: steps.append(1) or fn(tiny), qs, "cloze", False)
    assert [q.id for q in got] == [q.id for q in want] and len(steps) == 3  # 17 questions: 8 + 8 + 1
    assert known_path(tiny, qs, False, "cloze").exists()  # the entry known_questions reads


def test_plan_and_row_keys():
    a, b = Defence("default"), Defence("none")
    rows = B.plan([a, b], ["rephrase", "few_shot"])
    assert [(d.name, B.row_label(x, k)) for d, x, k in rows] == [
        ("default", "rephrase"),
        ("default", "few_shot:3"),
        ("default", "few_shot:8"),
        ("none", "rephrase"),
        ("none", "few_shot:3"),
        ("none", "few_shot:8"),
    ]


def test_score_chunks_keep_score_questions_batches():
    from unlearn_core.attacks.holds import score_chunks

    assert [len(c) for c in score_chunks(list(range(19)))] == [8, 8, 3]  # score_questions' own batches
    assert sum(score_chunks(list(range(19))), []) == list(range(19)) and score_chunks([]) == []


def test_relearn_trains_and_scores_in_short_holds_with_the_same_row(tiny, tmp_path, shared_data):
    """The server's lock is never held for a whole relearn row: each training step and each
    scoring chunk is one hold (the defence applied inside it), and the row equals the direct one."""
    from unlearn_core.attacks import relearn as RL

    cfg = RL.RelearnConfig(lrs=(1e-2,), steps=(0, 2, 3), headline_lr=1e-2, wikitext_lr=1e-2, wikitext_epochs=1)
    holding, holds, outside = [False], [0], []

    def run(fn):
        holding[0], holds[0] = True, holds[0] + 1
        try:
            return fn(tiny)
        finally:
            holding[0] = False

    def scored(d, qs):  # every fact known clean and forgotten under the defence: there is a T and a V
        return [d.name == "none"] * len(qs), [0.5] * len(qs)

    d = Defence("clamp", (IV,))
    rows = {}
    handle = tiny.model.register_forward_pre_hook(lambda m, a: None if holding[0] else outside.append(1))
    try:
        for how in ("held", "direct"):
            inputs = make_inputs(tmp_path, str(shared_data), run=run if how == "held" else None)
            rows[how] = RL.run(tiny, inputs, d, "facts", scored, cfg)
            if how == "held":
                assert not outside, f"{len(outside)} forward pass(es) outside a hold"
                # 3 training steps, a loss at steps 0, 2 and 3, and the scoring chunks of 2 points
                assert holds[0] >= 3 + 3 + 2
    finally:
        handle.remove()
    for r in rows.values():
        r.pop("wall_s")
    assert rows["held"] == rows["direct"] and rows["held"]["n_T"] == 5
