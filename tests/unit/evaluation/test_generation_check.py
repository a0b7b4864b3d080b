"""The free-text check of the demo (issue 35): the keyword, the NLL, the degenerate flags, the choice
of question, each against a hand computation."""

from __future__ import annotations

import pytest
import torch

from unlearn_core.data.loaders import Question
from unlearn_core.evaluation import generation_check as GC


def q(text: str, choices: tuple[str, ...], answer: int, qid: str = "q") -> Question:
    return Question(qid, text, choices, answer, "s", "quiz")


def test_the_keyword_is_the_answers_longest_word_no_other_choice_or_the_question_has():
    malaria = q("Which genus of parasite causes malaria?", ("Plasmodium", "Trypanosoma", "Giardia", "Leishmania"), 0)
    assert GC.answer_keyword(malaria) == "plasmodium"
    marple = q("Who created Miss Marple?", ("Dorothy L. Sayers", "Agatha Christie", "Ngaio Marsh", "P. D. James"), 1)
    assert GC.answer_keyword(marple) == "christie"
    shared = q("Which virus causes flu?", ("Influenza virus", "Rabies virus", "HIV", "Zika"), 0)
    assert GC.answer_keyword(shared) == "influenza"  # "virus" is in the question and another choice
    assert GC.answer_keyword(q("Pick one", ("B12", "C", "D", "E"), 0)) is None


def test_continuation_nll_equals_the_models_own_per_token_loss(tiny):
    prompt, cont = "Question: What is DNA?\nAnswer:", " a molecule that carries genes"
    got = GC.continuation_nll(tiny, prompt, cont)
    m = tiny.model
    p, c = m.to_tokens(prompt, prepend_bos=True), m.to_tokens(cont, prepend_bos=False)
    with torch.no_grad():
        per = m(torch.cat([p, c], 1), return_type="loss", loss_per_token=True)[0]  # loss of token t+1 at t
    assert got == pytest.approx(float(per[-c.shape[1] :].mean()), rel=1e-5)


@pytest.mark.parametrize(
    "nll, text, reason",
    [
        (0.5, "Plasmodium falciparum, spread by mosquitoes", None),
        (0.5, "the the the the the the the", "repetitive"),
        (0.5, " 1920 ... 33", "empty"),
        (GC.OFF_TOPIC_NLL + 0.01, "The court has the power to decide", "off-topic"),
        (GC.OFF_TOPIC_NLL, "The court has the power to decide", None),  # at the threshold: still on topic
    ],
)
def test_degenerate_reasons(nll, text, reason):
    assert GC.degenerate_reason(nll, text) == reason


def test_the_check_takes_the_first_question_answered_in_free_text(monkeypatch):
    """The first candidate's clean answer lacks its keyword, so the second is checked; the clamped
    text lacks it too but is off topic: broken output, not forgetting."""
    qs = [
        q("Which bacterium causes leprosy?", ("Mycobacterium leprae", "E. coli", "Vibrio", "Listeria"), 0, "a"),
        q("Which genus of parasite causes malaria?", ("Plasmodium", "Trypanosoma", "Giardia", "Leishmania"), 0, "b"),
    ]
    said = {("a", None): " The 1960s", ("b", None): " Plasmodium falciparum", ("b", "iv"): " The court has"}
    calls = []

    def fake_generate(engine, prompt, ivs, max_new_tokens):
        key = ("a" if "leprosy" in prompt else "b", ivs[0] if ivs else None)
        calls.append(key)
        return said[key]

    monkeypatch.setattr(GC, "generate", fake_generate)
    monkeypatch.setattr(GC, "continuation_nll", lambda engine, prompt, text: 2.5)
    g = GC.check_generation(None, qs, "iv")
    assert calls == [("a", None), ("b", None), ("b", "iv")]
    assert (g.question_id, g.keyword, g.clean_says_it, g.clamped_says_it) == ("b", "plasmodium", True, False)
    assert g.degenerate == "off-topic" and g.verdict.startswith("broken output (off-topic)")
    monkeypatch.setattr(GC, "continuation_nll", lambda engine, prompt, text: 0.9)
    assert GC.check_generation(None, qs, "iv").verdict == "no longer says it"
    said[("b", "iv")] = " Plasmodium vivax"
    assert GC.check_generation(None, qs, "iv").verdict == "still says it"
