"""The bench's scoring against direct per-question computations on the tiny model."""

from __future__ import annotations

import json

import pytest

from unlearn_core.attacks import bench as B
from unlearn_core.attacks import transforms as TR
from unlearn_core.attacks.defences import Defence
from unlearn_core.data import loaders as D
from unlearn_core.data.probes import link, raw_id
from unlearn_core.evaluation.mcq import score_question as _score
from unlearn_core.method.interventions import Intervention

IV = Intervention("tiny", (1, 2, 3), 30.0)


def score_question(engine, q, ivs=None):
    return _score(engine, q, ivs, scoring="cloze")  # the bench scores as the inputs say (cloze here)


@pytest.fixture()
def inputs(tmp_path, shared_data):
    bio = D.load_question_set("quiz:bio", str(shared_data)).questions
    sources = bio[:10]
    rows = []
    for q in sources:
        order = [3, 2, 1, 0]
        rows.append(
            {
                "id": f"{raw_id(q)}.paraphrase",
                "source_id": raw_id(q),
                "probe": "paraphrase",
                "question": f"Tell me this: {q.question}",
                "choices": [q.choices[i] for i in order],
                "answer": order.index(q.answer),
            }
        )
    path = tmp_path / "probes.json"
    path.write_text(json.dumps(rows))
    probes = link(D.load_question_set(str(path)).questions, bio, "quiz:bio")
    retain = D.load_question_set("quiz:retain", str(shared_data)).questions
    return B.Inputs(sources, probes, retain[:8], retain[8:20], "cloze", str(path))


def test_probe_attack_outcomes_equal_direct_scores(tiny, inputs):
    d = Defence("clamp", (IV,))
    row = B.run_one(tiny, inputs, d, "rephrase")
    assert row["threat"] == "api" and row["attack"] == "rephrase" and len(row["facts"]) == 10
    for f, lp in zip(row["facts"], inputs.probes):
        assert f["source_id"] == lp.source.id
        assert f["known_attacked"] == score_question(tiny, lp.probe).correct
        assert f["defended_original"] == score_question(tiny, lp.source, [IV]).correct
        assert f["defended_attacked"] == score_question(tiny, lp.probe, [IV]).correct
    known_r = [q for q in inputs.retain if score_question(tiny, q).correct]
    want = sum(score_question(tiny, q, [IV]).correct for q in known_r) / len(known_r)
    assert row["n_retain"] == len(known_r) and row["retain_acc"] == pytest.approx(want)
    forgotten = [f for f in row["facts"] if f["known_attacked"] and not f["defended_original"]]
    assert row["n_forgotten"] == len(forgotten) and row["n_recovered"] == sum(f["defended_attacked"] for f in forgotten)


def test_few_shot_and_filler_score_the_transformed_prompt(tiny, inputs):
    d = Defence("clamp", (IV,))
    row = B.run_one(tiny, inputs, d, "few_shot", 3)
    shots = inputs.shots[:3]
    assert row["attack"] == "few_shot:3" and row["retain_form"] == "attacked"
    for f, q in zip(row["facts"], inputs.forget):
        a = TR.few_shot(q, shots)
        assert a.question.startswith(f"{shots[0].question}\nAnswer: {shots[0].correct_text.strip()}\n\nQuestion: ")
        assert a.question.endswith(q.question) and a.answer == q.answer
        assert f["known_attacked"] == score_question(tiny, a).correct
        assert f["defended_attacked"] == score_question(tiny, a, [IV]).correct
    row = B.run_one(tiny, inputs, d, "filler")
    filler = B.filler_text(tiny)
    assert filler.strip()
    for f, q in zip(row["facts"], inputs.forget):
        assert f["defended_attacked"] == score_question(tiny, TR.with_filler(q, filler), [IV]).correct


def test_the_clean_control_recovers_nothing_it_did_not_lose(tiny, inputs):
    row = B.run_one(tiny, inputs, B.NONE, "rephrase")
    for f in row["facts"]:  # the "defence" is the clean model: right in the original wording = known there
        src = next(lp.source for lp in inputs.probes if lp.source.id == f["source_id"])
        assert f["defended_original"] == score_question(tiny, src).correct
    assert row["retain_acc"] in (None, 1.0)


def test_shots_never_include_the_question_and_bad_names_fail():
    q = D.Question("x:1", "Q?", ("a", "b", "c", "d"), 0, "s", "x")
    with pytest.raises(ValueError, match="among its own shots"):
        TR.few_shot(q, [q])
    with pytest.raises(ValueError, match="needs 8 known retain questions"):
        TR.shots_for([q], 8)
    with pytest.raises(ValueError, match="unknown attack"):
        B.parse_attacks("rephrase,relearnn")
    assert B.parse_attacks("few_shot, rephrase,few_shot") == ["few_shot", "rephrase"]
