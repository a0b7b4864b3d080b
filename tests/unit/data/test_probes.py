"""Probe files: linking by source id, clear errors for bad files, parts that follow the original,
and the shipped probe sets' own consistency."""

from __future__ import annotations

import json

import pytest

from unlearn_core.data import loaders as D
from unlearn_core.data.probes import PROBE_KINDS, ProbeError, by_kind, link, raw_id
from unlearn_core.data.prompts import cloze_prefix
from unlearn_core.data.question_files import split_part

SOURCES = [
    D.Question(
        "quiz-bio:bio-001", "Which bacterium causes anthrax?", ("Yp", "Ct", "Vc", "Bacillus anthracis"), 3, "s", "q"
    ),
    D.Question("quiz-bio:bio-002", "Which organ makes insulin?", ("Liver", "Pancreas", "Heart", "Lung"), 1, "s", "q"),
]


def probe_file(tmp_path, rows) -> list[D.Question]:
    p = tmp_path / "p.json"
    p.write_text(json.dumps(rows))
    return D.load_question_set(str(p)).questions


def row(**kw) -> dict:
    base = {
        "id": "bio-001.paraphrase",
        "source_id": "bio-001",
        "probe": "paraphrase",
        "question": "Anthrax is an infection by which species?",
        "choices": ["Bacillus anthracis", "Yp", "Ct", "Vc"],
        "answer": 0,
    }
    return {**base, **kw}


def test_probes_link_to_their_originals_by_raw_or_full_id(tmp_path):
    rows = [
        row(),
        row(
            id="bio-002.generation",
            source_id="quiz-bio:bio-002",
            probe="generation",
            question="Insulin is made in the",
            choices=["Liver", "Pancreas", "Heart", "Lung"],
            answer=1,
            keywords=["pancreas"],
        ),
    ]
    linked = link(probe_file(tmp_path, rows), SOURCES, "quiz:bio")
    assert [lp.source.id for lp in linked] == ["quiz-bio:bio-001", "quiz-bio:bio-002"]
    assert [lp.kind for lp in linked] == ["paraphrase", "generation"] and linked[1].keywords == ("pancreas",)
    assert [lp.probe.id for lp in by_kind(linked, "generation")] == ["p:bio-002.generation"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"source_id": "bio-999"}, "unknown source id 'bio-999' (not a question of quiz:bio)"),
        ({"source_id": None}, "missing 'source_id'"),
        ({"probe": "rhyme"}, "'probe' must be one of"),
        ({"probe": "generation"}, "a generation probe needs 'keywords'"),
        ({"probe": "generation", "keywords": []}, "a generation probe needs 'keywords'"),
        ({"probe": "generation", "keywords": ["anthrax"]}, "a keyword is in the prompt itself"),
        ({"answer": 1}, "is not its original's"),
    ],
)
def test_bad_probe_files_get_clear_errors(tmp_path, bad, message):
    with pytest.raises(ProbeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        link(probe_file(tmp_path, [row(**bad)]), SOURCES, "quiz:bio")


def test_a_fill_blank_probe_is_scored_after_its_own_stem():
    q = D.Question(
        "p:1", "Anthrax is caused by the bacterium ", ("a", "b", "c", "d"), 0, "s", "p", {"probe": "fill_blank"}
    )
    assert cloze_prefix(q) == "Anthrax is caused by the bacterium"
    assert cloze_prefix(SOURCES[0]) == "Question: Which bacterium causes anthrax?\nAnswer:"


@pytest.mark.parametrize(("name", "source"), [("bio-probes", "bio"), ("sherlock-probes", "sherlock")])
def test_the_shipped_probe_sets_cover_every_dev_question_and_follow_its_half(shared_data, name, source):
    probes = D.load_question_set(f"quiz:{name}", str(shared_data)).questions
    originals = D.load_question_set(f"quiz:{source}", str(shared_data)).questions
    linked = link(probes, originals, f"quiz:{source}")
    for kind in PROBE_KINDS:  # every question, every kind
        assert sorted(lp.source.id for lp in by_kind(linked, kind)) == sorted(q.id for q in originals), kind
    held = {q.id for q in split_part(originals, "heldout")}
    part = D.load_question_set(f"quiz:{name}@heldout", str(shared_data)).questions
    assert part and {f"quiz-{source}:{q.extra['source_id']}" for q in part} <= held
    assert len(part) == 4 * len(held)
    for lp in by_kind(linked, "paraphrase"):  # other words, the choices shuffled
        assert lp.probe.question != lp.source.question and lp.probe.answer != lp.source.answer, raw_id(lp.probe)
