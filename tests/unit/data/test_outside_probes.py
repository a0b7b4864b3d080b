"""A probe file written outside the project (tests/fixtures/outside_probes, issue 36's independent
check): it loads and links as a stranger wrote it (wrapper object, letter answers, other field
orders, unknown fields), broken copies of it fail with the loader's clear errors, and the
independent check script (bench/independent_probe_check.py) reads it and splits parts as the
package does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_core.data import loaders as D
from unlearn_core.data.probes import MCQ_KINDS, ProbeError, by_kind, link
from unlearn_core.data.prompts import cloze_prefix
from unlearn_core.data.question_files import QuestionFileError, split_part

ROOT = Path(__file__).resolve().parents[3]
OUTSIDE = ROOT / "tests" / "fixtures" / "outside_probes" / "bio_outside.probes.json"
TRAIN_ON_PURPOSE = {"ox-para-11", "ox-ctx-10"}  # the file's two probes of train-half questions


@pytest.fixture(scope="module")
def originals(shared_data):
    return D.load_question_set("quiz:bio", str(shared_data)).questions


def test_the_outside_file_loads_links_and_mostly_asks_held_out_facts(originals):
    probes = D.load_question_set(str(OUTSIDE)).questions
    linked = link(probes, originals, "quiz:bio")
    counts = {k: len(by_kind(linked, k)) for k in ("paraphrase", "fill_blank", "context", "generation")}
    assert counts == {"paraphrase": 11, "fill_blank": 9, "context": 10, "generation": 4}
    first = probes[0]  # "answer": "C", an unknown field kept, the wrapper's "questions" read
    assert first.id == "bio_outside.probes:ox-para-01" and first.answer == 2 and first.extra["written_by"] == "outsider"
    held = {q.id for q in split_part(originals, "heldout")}
    train = {lp.probe.extra["id"] for lp in linked if lp.source.id not in held}
    assert train == TRAIN_ON_PURPOSE
    for lp in linked:
        if lp.kind in MCQ_KINDS:  # the same choices, in another order than the original's
            assert sorted(c.lower() for c in lp.probe.choices) == sorted(c.lower() for c in lp.source.choices)
            assert [c.lower() for c in lp.probe.choices] != [c.lower() for c in lp.source.choices], lp.probe.id
    for lp in by_kind(linked, "fill_blank"):  # scored after its own stem, not in the quiz format
        assert cloze_prefix(lp.probe) == lp.probe.question and "Question:" not in cloze_prefix(lp.probe)


def broken(tmp_path, change) -> str:
    doc = json.loads(OUTSIDE.read_text())
    change(doc["questions"])
    p = tmp_path / "broken.probes.json"
    p.write_text(json.dumps(doc))
    return str(p)


def by_id(rows, rid):
    return next(r for r in rows if r["id"] == rid)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: by_id(rows, "ox-fb-03").update(source_id="bio-999"), "probe 'ox-fb-03': unknown source id"),
        (lambda rows: by_id(rows, "ox-gen-02").pop("keywords"), "probe 'ox-gen-02': a generation probe needs"),
        (lambda rows: by_id(rows, "ox-gen-03").update(keywords=["vaccine"]), "a keyword is in the prompt itself"),
        (lambda rows: by_id(rows, "ox-ctx-02").update(answer=0), "is not its original's"),
        (lambda rows: by_id(rows, "ox-para-05").update(probe="rewording"), "'probe' must be one of"),
        (lambda rows: by_id(rows, "ox-para-04").pop("source_id"), "probe 'ox-para-04': missing 'source_id'"),
    ],
)
def test_broken_copies_fail_to_link_with_the_record_named(tmp_path, originals, change, message):
    probes = D.load_question_set(broken(tmp_path, change)).questions
    with pytest.raises(ProbeError, match=message.replace("(", r"\(")):
        link(probes, originals, "quiz:bio")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: by_id(rows, "ox-para-01").update(answer="E"), "question 1: 'answer' must be 0-3 or A-D"),
        (lambda rows: by_id(rows, "ox-fb-01").update(id="ox-para-01"), "1 duplicate question id"),
        (lambda rows: by_id(rows, "ox-ctx-01")["choices"].pop(), "question 21: expected 4 choices, got 3"),
    ],
)
def test_broken_copies_fail_to_load_with_the_row_named(tmp_path, change, message):
    with pytest.raises(QuestionFileError, match=message):
        D.load_question_set(broken(tmp_path, change))


def test_the_check_script_reads_the_file_and_splits_parts_as_the_package_does(monkeypatch, originals):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import independent_probe_check as ipc

    mine = ipc.parse_probe_file(OUTSIDE)
    theirs = D.load_question_set(str(OUTSIDE)).questions
    assert [(r["full_id"], r["question"], tuple(r["choices"]), r["answer"]) for r in mine] == [
        (q.id, q.question, q.choices, q.answer) for q in theirs
    ]
    held = [q.id for q in originals if not ipc.in_train_half(q.id)]
    assert held == [q.id for q in split_part(originals, "heldout")]


def test_the_check_script_counts_facts_and_flags_a_differing_figure(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import independent_probe_check as ipc

    def fact(i, ka, do, da):
        return {
            "source_id": f"q:{i}",
            "probe_id": f"p:{i}",
            "attacked": f"t{i}",
            "known_original": True,
            "known_attacked": ka,
            "defended_original": do,
            "defended_attacked": da,
        }

    # unit: 1, 2, 3 (4 not known in the probe form); forgotten: 1, 2; recovered: 2
    facts = [
        fact(1, True, False, False),
        fact(2, True, False, True),
        fact(3, True, True, True),
        fact(4, False, False, True),
    ]
    s = ipc.summarize(facts)
    assert (s["n_pairs"], s["n_facts"], s["n_forgotten"], s["n_recovered"]) == (4, 3, 2, 1)
    assert s["recovery_rate"] == 0.5 and s["forget_acc_original"] == pytest.approx(1 / 3)
    assert s["forget_acc_attacked"] == pytest.approx(2 / 3)
    mine = {
        "n_known_forget": 9,
        "per_attack": {"rephrase": s},
        "facts": {"rephrase": facts},
        "target_eval": {"n_questions": 4, "n_known": 3, "intervened_accuracy": 0.5},
    }
    row = {
        "defence": "default",
        "attack": "rephrase",
        **{ipc.BENCH_NAME.get(k, k): s[k] for k in ipc.FIGURES},
        "facts": [dict(f) for f in facts],
    }
    ev = {"forget": dict(mine["target_eval"])}
    assert ipc.compare(mine, {"n_known_forget": 9, "rows": [row]}, ev)[1]
    row["facts"][1]["defended_attacked"] = False  # one fact's outcome differs: found, and named
    table, ok = ipc.compare(mine, {"n_known_forget": 9, "rows": [row]}, ev)
    assert not ok and "p:2 (q:2): defended_attacked True vs False" in table


def test_the_check_script_asks_the_blank_and_the_probe_kind_inline(monkeypatch):
    """The script's verdicts come from inline questions only: the blank form is the same choices and
    answer with question "" and the probe's kind (a blanked fill_blank probe is its choices alone),
    clean; a probe is posted with its kind and the defence. Never a question id."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import independent_probe_check as ipc

    class Recorder:
        def __init__(self):
            self.bodies = []

        def post(self, path, body):
            self.bodies.append((path, body))
            return {"base": {"correct": True}}

    api, row = Recorder(), ipc.parse_probe_file(OUTSIDE)[11]
    assert row["probe"] == "fill_blank"
    assert ipc.right_blanked(api, row, row["probe"]) is True
    ipc.score_inline(api, row, [{"sae": "s", "features": [1], "value": 5.0}], row["probe"])
    blank, probe = api.bodies
    q = {"choices": row["choices"], "answer": row["answer"], "probe": "fill_blank"}
    assert blank == ("/api/mcq", {"question": {"question": "", **q}})
    assert probe[1]["question"] == {"question": row["question"], **q} and len(probe[1]["interventions"]) == 1
    assert all("question_id" not in b and "set" not in b for _, b in api.bodies)
