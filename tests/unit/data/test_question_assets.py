"""The hand-written question files shipped in core/assets/questions.

``bio_quiz.dev.paraphrase.json`` rewords every question of the bio dev quiz (same fact, same options,
shuffled), so forgetting can be checked beyond the quiz's own wording; ``general_knowledge.json``
is a retain set with nothing from biology, medicine or detective fiction in it.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from unlearn_core.core.paths import ASSETS
from unlearn_core.data.question_files import parse_question_file

QUESTIONS_DIR = ASSETS / "questions"
PARAPHRASE_FILE = QUESTIONS_DIR / "bio_quiz.dev.paraphrase.json"
GENERAL_FILE = QUESTIONS_DIR / "general_knowledge.json"
BIO_DEV = "quiz/bio_quiz.dev.json"

# paraphrase id -> its correct answer text, where an option was reworded on purpose (none so far)
DELIBERATE_REWORDINGS: dict[str, str] = {}

# whole words (case-insensitive) that would put a general-knowledge item in the forget domain
BANNED_WORDS = """
    anatomy animals? antibiotics? bacteri(a|um|al) biolog(y|ical|ist) blood body bones? brain cancer cells?
    darwin detectives? disease dna doctors? drugs? enzymes? epidemic evolution fever genes? genetics? health
    holmes hospitals? illness immune infections? medical medicine microbes? mystery nurses? organs? pandemic
    pathogens? patients? photosynthesis plants? poison proteins? rna sherlock species surgery tissues? toxins?
    vaccines? virus(es)? watson
""".split()
BANNED = re.compile(r"\b(" + "|".join(BANNED_WORDS) + r")\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def paraphrases():
    return parse_question_file(PARAPHRASE_FILE)


@pytest.fixture(scope="module")
def general():
    return parse_question_file(GENERAL_FILE)


@pytest.fixture(scope="module")
def bio_dev(shared_data):
    return {q.extra["id"]: q for q in parse_question_file(shared_data / BIO_DEV)}


def test_both_files_parse_with_unique_ids(paraphrases, general):
    for qs in (paraphrases, general):
        ids = [q.extra["id"] for q in qs]
        assert len(ids) == len(set(ids))
        assert all(len(q.choices) == 4 and len(set(q.choices)) == 4 for q in qs)
    assert len(general) == 200
    assert [q.extra["id"] for q in general] == [f"gk-{n:03d}" for n in range(1, 201)]
    assert {q.extra["kind"] for q in general} == {"general"}
    assert all(q.extra["topic"] for q in general)


def test_every_bio_dev_question_has_one_paraphrase(paraphrases, bio_dev):
    sources = [p.extra["source_id"] for p in paraphrases]
    assert len(sources) == len(set(sources))
    assert set(sources) == set(bio_dev)
    for p in paraphrases:
        src = p.extra["source_id"]
        assert p.extra["id"] == src + "-p"
        assert (p.extra["kind"], p.extra["topic"]) == (bio_dev[src].extra["kind"], bio_dev[src].extra["topic"])


def test_paraphrases_keep_the_answer_and_reword_the_question(paraphrases, bio_dev):
    for p in paraphrases:
        o = bio_dev[p.extra["source_id"]]
        expected = DELIBERATE_REWORDINGS.get(p.extra["id"], o.choices[o.answer])
        assert p.choices[p.answer] == expected, p.id
        if p.extra["id"] not in DELIBERATE_REWORDINGS:
            assert sorted(p.choices) == sorted(o.choices), p.id
        assert p.question.strip().lower() != o.question.strip().lower(), p.id
    moved = sum(p.answer != bio_dev[p.extra["source_id"]].answer for p in paraphrases)
    assert moved >= 0.75 * len(paraphrases)


def test_answer_positions_are_spread(paraphrases, general):
    for qs in (paraphrases, general):
        counts = Counter(q.answer for q in qs)
        assert set(counts) == {0, 1, 2, 3}
        assert max(counts.values()) - min(counts.values()) <= 0.1 * len(qs)


def test_general_knowledge_stays_out_of_the_forget_domains(general):
    hits = {q.extra["id"]: [m.group(0) for m in BANNED.finditer(" ".join((q.question, *q.choices)))] for q in general}
    assert {k: v for k, v in hits.items() if v} == {}


def test_banned_word_list_catches_forget_domain_text():
    assert BANNED.search("Which virus causes smallpox?")
    assert BANNED.search("Who is Sherlock Holmes's friend?")
    assert BANNED.search("Which organ filters blood?")
    assert not BANNED.search("Which international organization is based in Geneva?")
    assert not BANNED.search("Who played the cello?")


def test_shipped_quizzes_load_by_name_and_a_rewording_shares_its_originals_half(shared_data):
    """``quiz:general`` and ``quiz:bio-paraphrase`` read the package's files (the server accepts the
    names); a rewording lands in the same half as the question it rewords, so a held-out fact is
    held out in both wordings."""
    from unlearn_core.data import loaders as D

    general = D.load_question_set("quiz:general", str(shared_data))
    assert len(general.questions) == 200 and general.label == "general knowledge (shipped)"
    originals = {q.extra["id"]: q for q in D.load_question_set("quiz:bio@heldout", str(shared_data)).questions}
    held = D.load_question_set("quiz:bio-paraphrase@heldout", str(shared_data)).questions
    train = D.load_question_set("quiz:bio-paraphrase@train", str(shared_data)).questions
    assert len(held) + len(train) == 190 and held and train
    assert {q.extra["source_id"] for q in held} == set(originals)
    assert not {q.extra["source_id"] for q in train} & set(originals)
    with pytest.raises(KeyError, match="general"):
        D.load_question_set("quiz:no-such")
