"""Letter and cloze scoring, orderings and the known filter, against direct computations."""

import pytest
import torch

from unlearn_core.data.loaders import Question
from unlearn_core.evaluation import mcq
from unlearn_core.model.forward import final_resid, tokenize, unembed

Q = Question(
    "t:1", "Which organelle makes ATP?", ("ribosome", "mitochondrion", "nucleus", "vacuole"), 1, "biology", "test"
)
Q2 = Question("t:2", "What is 2+2?", ("3", "4", "5", "22"), 1, "math", "test")


def test_24_orderings_keep_the_answer():
    variants = mcq.all_orderings(Q)
    assert len(variants) == 24 and len({v.choices for v in variants}) == 24
    assert all(v.choices[v.answer] == "mitochondrion" for v in variants)


def test_unembed_matches_full_forward(tiny):
    toks, lens = tokenize(tiny.model, ["Hello there, cells."])
    full = tiny.model(toks)
    mine = unembed(tiny.model, final_resid(tiny.model, toks))
    torch.testing.assert_close(mine, full, atol=1e-5, rtol=1e-5)


def test_letter_probs_equal_softmax_of_full_logits(tiny):
    prompt = mcq.format_prompt(Q, "plain")
    probs, mass = mcq.letter_probs_batch(tiny, [prompt])
    logits = tiny.model(tiny.model.to_tokens(prompt))[0, -1]
    p = torch.softmax(logits.double(), -1)
    ids = [tiny.model.tokenizer.encode(L, add_special_tokens=False)[0] for L in "ABCD"]
    torch.testing.assert_close(probs[0].double(), p[ids], atol=1e-6, rtol=1e-4)
    assert mass[0] == pytest.approx(float(p[ids].sum()), rel=1e-4)


def test_letter_probability_is_max_over_variants(tiny, monkeypatch):
    tok = tiny.model.tokenizer
    variants = [[tok.convert_tokens_to_ids(L), tok.convert_tokens_to_ids(L.lower())] for L in "ABCD"]
    monkeypatch.setattr(mcq, "letter_token_ids", lambda _tok: variants)
    prompt = mcq.format_prompt(Q, "plain")
    probs, _ = mcq.letter_probs_batch(tiny, [prompt])
    p = torch.softmax(tiny.model(tiny.model.to_tokens(prompt))[0, -1].double(), -1)
    expected = torch.stack([p[v].max() for v in variants])
    torch.testing.assert_close(probs[0].double(), expected, atol=1e-6, rtol=1e-4)


def test_batched_scoring_with_padding_equals_one_by_one(tiny):
    qs = [Q, Q2, Q.reordered((3, 2, 1, 0))]
    batched = mcq.score_questions(tiny, qs, scoring="letter", batch_size=3)
    single = [mcq.score_question(tiny, q, scoring="letter") for q in qs]
    for b, s in zip(batched, single):
        assert b.probs == pytest.approx(s.probs, rel=1e-4, abs=1e-7)


def test_cloze_is_mean_loglik_of_answer_tokens(tiny):
    m = tiny.model
    ll = mcq.cloze_logliks(tiny, Q)
    prefix = m.to_tokens(mcq.cloze_prefix(Q))[0].tolist()
    for i, choice in enumerate(Q.choices):
        cont = m.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        toks = torch.tensor([prefix + cont])
        lp = torch.log_softmax(m(toks)[0].double(), -1)
        expected = torch.stack([lp[len(prefix) - 1 + j, t] for j, t in enumerate(cont)]).mean()
        assert float(ll[i]) == pytest.approx(float(expected), abs=1e-4)


def test_cloze_does_not_depend_on_option_order(tiny):
    perm = (2, 0, 3, 1)
    a = mcq.cloze_logliks(tiny, Q)
    b = mcq.cloze_logliks(tiny, Q.reordered(perm))
    torch.testing.assert_close(b, a[list(perm)], atol=1e-5, rtol=1e-5)
    s = mcq.score_question(tiny, Q, scoring="cloze")
    assert sum(s.probs) == pytest.approx(1.0) and s.predicted == int(a.argmax())


QS = [
    Q,
    Q2,
    Question("t:3", "Pick B.", ("a", "b", "c", "d"), 1, "misc", "test"),
    Question(
        "t:4",
        "Which gas do plants take in for photosynthesis?",
        ("oxygen", "carbon dioxide", "helium", "neon"),
        1,
        "biology",
        "test",
    ),
    Question("t:5", "Who wrote Hamlet?", ("Shakespeare", "Dickens", "Austen", "Twain"), 0, "lit", "test"),
]


def test_counted_positions_per_row_prompt_lengths():
    from unlearn_core.method.interventions import counted_positions

    tokens = torch.tensor([[2, 5, 6, 7, 0], [2, 5, 6, 0, 0]])
    got = counted_positions(tokens, (0, 2), [3, 2])
    assert got.tolist() == [[False, True, True, False, False], [False, True, False, False, False]]
    assert counted_positions(tokens, (0, 2), 3).tolist() == counted_positions(tokens, (0, 2), [3, 3]).tolist()
    with pytest.raises(ValueError, match="3 prompt lengths for 2 rows"):
        counted_positions(tokens, (0, 2), [1, 2, 3])


def test_cloze_batch_equals_one_question_at_a_time_clean_clamped_and_gated(tiny):
    """Several questions in one forward give each question's own scores. Under a gated clamp the
    gate must count each row's own prefix: the taus below decide differently for different
    questions (checked), so one shared prompt length or a shared decision would show."""
    from model_helpers import active_features

    from unlearn_core.method.interventions import Intervention

    feats = tuple(active_features(tiny, k=1))
    clean = [mcq.cloze_logliks(tiny, q) for q in QS]
    clamped = [mcq.cloze_logliks(tiny, q, tiny.hooks([Intervention("tiny", feats, 30.0)])) for q in QS]
    mixed = 0
    for ivs in ([], [Intervention("tiny", feats, 30.0)]) + tuple(
        [Intervention("tiny", feats, 30.0, "gated", gate=t)] for t in (0.2, 0.4, 0.6, 0.8)
    ):
        single = [mcq.cloze_logliks(tiny, q, tiny.hooks(ivs)) for q in QS]
        batch = mcq.cloze_logliks_batch(tiny, QS, tiny.hooks(ivs))
        for a, b in zip(batch, single):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        if ivs and ivs[0].mode == "gated":
            opened = [not torch.allclose(s, c, atol=1e-6) for s, c in zip(single, clean)]
            assert all(torch.allclose(s, k, atol=1e-5) for s, k, o in zip(single, clamped, opened) if o)
            mixed += 0 < sum(opened) < len(QS)
    assert mixed, "no tau opened the gate for some questions and not others: the test would not see a shared decision"
    scores = mcq.score_questions(tiny, QS, scoring="cloze", batch_size=2)
    assert [s.predicted for s in scores] == [int(c.argmax()) for c in clean]


def test_strict_cloze_known_filter_equals_a_direct_computation(tiny):
    expected = [
        q.id
        for q in QS
        if mcq.score_question(tiny, q, scoring="cloze").correct
        and not mcq.score_question(tiny, q.blanked(), scoring="cloze").correct
    ]
    loose = [q.id for q in QS if mcq.score_question(tiny, q, scoring="cloze").correct]
    got = mcq.known_questions(tiny, QS, scoring="cloze", style="plain", use_cache=False, strict=True)
    assert [q.id for q in got] == expected
    got = mcq.known_questions(tiny, QS, scoring="cloze", style="plain", use_cache=False)
    assert [q.id for q in got] == loose


def test_known_filter_is_all_24_orderings_and_cached(tiny, monkeypatch):
    qs = [Q, Q2, Question("t:3", "Pick B.", ("a", "b", "c", "d"), 1, "misc", "test")]
    expected = [
        q.id for q in qs if all(s.correct for s in mcq.score_questions(tiny, mcq.all_orderings(q), scoring="letter"))
    ]
    got = [q.id for q in mcq.known_questions(tiny, qs, scoring="letter", style="plain")]
    assert got == expected

    def boom(*a, **k):
        raise AssertionError("known set should come from the disk cache")

    monkeypatch.setattr(mcq, "score_questions", boom)
    assert [q.id for q in mcq.known_questions(tiny, qs, scoring="letter", style="plain")] == expected


def test_prompt_formats():
    plain = mcq.format_prompt(Q, "plain")
    assert plain.startswith("The following are multiple choice questions (with answers) about biology.")
    assert "\nB. mitochondrion\n" in plain and plain.endswith("Answer:")
    chat = mcq.format_prompt(Q, "chat")
    assert chat.startswith("<bos><start_of_turn>user\n") and chat.endswith("<start_of_turn>model\n")
    with pytest.raises(ValueError):
        mcq.format_prompt(Q, "weird")


def test_intervention_changes_letter_scores(tiny):
    from unlearn_core.method.interventions import Intervention
    from unlearn_core.model.tiny import ALWAYS_FIRES

    base = mcq.score_question(tiny, Q, scoring="letter")
    hit = mcq.score_question(tiny, Q, [Intervention("tiny", (ALWAYS_FIRES,), 50.0)], scoring="letter")
    assert max(abs(a - b) for a, b in zip(base.probs, hit.probs)) > 1e-4
