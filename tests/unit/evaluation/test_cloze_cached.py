"""The cached cloze path (each prefix run once, its choices attending to its keys/values) against
the row path and a direct forward of every row, in every intervention mode, on the tiny model
(TransformerLens's own attention) and on a Gemma-3-like one (local layers with a window shorter
than every prefix, the copy-free attention)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import active_features, gemma3_like_engine

from unlearn_core.data.loaders import Question
from unlearn_core.evaluation import cloze_cached as CC
from unlearn_core.evaluation import mcq
from unlearn_core.method.gate import rho_of_tokens
from unlearn_core.method.interventions import Intervention, gate_prompt

SHOTS = "".join(
    f"{q}\nAnswer: {a}\n\nQuestion: "
    for q, a in [("What is the capital of France?", "Paris"), ("How many legs has a spider?", "eight")]
)
QS = [
    Question("c:1", "Which organelle makes ATP?", ("ribosome", "mitochondrion", "nucleus", "vacuole"), 1, "bio", "t"),
    Question(
        "c:2", SHOTS + "What carries oxygen in blood?", ("haemoglobin", "insulin", "keratin", "DNA"), 0, "bio", "t"
    ),
    Question("c:3", "What is 2+2?", ("3", "4", "5", "22"), 1, "math", "t"),
    Question("c:4", SHOTS + "Which gas do plants take in?", ("oxygen", "CO2", "helium", "argon"), 1, "bio", "t"),
    Question("c:5", "Rivers and hills. " * 4 + "Where is DNA kept?", ("nucleus", "wall", "gut", "ear"), 0, "bio", "t"),
]
WINDOW = 6  # the local layers' window: every prefix above is longer


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return gemma3_like_engine(str(tmp_path_factory.mktemp("local")), WINDOW)


@pytest.fixture(params=["tiny", "local"])
def engine(request, tiny, local):
    return tiny if request.param == "tiny" else local


def rows(engine, qs=QS):
    return [mcq.cloze_rows(engine.model.tokenizer, q) for q in qs]


def mixed_tau(engine, feats) -> float:
    """A tau between the questions' prefix rhos: the gate opens on some prefixes, not on others."""
    rhos = sorted(set(rho_of_tokens(engine, "tiny", feats, [p for p, _ in rows(engine)])))
    assert len(rhos) > 1, "every prefix has the same rho: no tau splits them"
    i = len(rhos) // 2
    return (rhos[i - 1] + rhos[i]) / 2


_MEMO: dict = {}  # per engine (and mode): the modes and the row path's numbers, computed once


def modes(engine) -> dict[str, list[Intervention]]:
    if ("modes", id(engine)) not in _MEMO:
        _MEMO[("modes", id(engine))] = _modes(engine)
    return _MEMO[("modes", id(engine))]


def _modes(engine) -> dict[str, list[Intervention]]:
    feats = tuple(active_features(engine, k=2))
    tau = mixed_tau(engine, feats)
    return {
        "clean": [],
        "clamp": [Intervention("tiny", feats, 30.0)],
        "gated open": [Intervention("tiny", feats, 30.0, "gated", gate=0.0)],
        "gated shut": [Intervention("tiny", feats, 30.0, "gated", gate=1.0)],
        "gated mixed": [Intervention("tiny", feats, 30.0, "gated", gate=tau)],
        "dsg mixed": [Intervention("tiny", feats, 30.0, "dsg", gate=tau)],
    }


def row_path(engine, ivs):
    key = ("rows", id(engine), tuple(ivs))
    if key not in _MEMO:
        _MEMO[key] = mcq.cloze_logliks_batch(engine, QS, engine.hooks(ivs))
    return _MEMO[key]


def assert_lists_close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-5)


def differs(a, b) -> bool:
    return any(not torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b))


def test_prefixes_are_longer_than_the_local_window(local):
    lens = [len(p) for p, _ in rows(local)]
    assert min(lens) > 2 * WINDOW and max(lens) > 10 * WINDOW


@pytest.mark.parametrize("mode", ["clean", "clamp", "gated open", "gated shut", "gated mixed", "dsg mixed"])
def test_cached_path_equals_the_row_path(engine, mode):
    ivs = modes(engine)[mode]
    assert_lists_close(CC.cached_logliks(engine, rows(engine), ivs), row_path(engine, ivs))


def test_the_gate_cases_are_the_ones_named(engine):
    """gated open == the static clamp != clean; shut == clean; mixed: some questions each way."""
    m = modes(engine)
    clean, clamp = row_path(engine, []), row_path(engine, m["clamp"])
    assert differs(clamp, clean)
    assert_lists_close(row_path(engine, m["gated open"]), clamp)
    assert_lists_close(row_path(engine, m["gated shut"]), clean)
    mixed = row_path(engine, m["gated mixed"])
    opened = [not torch.allclose(x, c, atol=1e-6) for x, c in zip(mixed, clean)]
    assert 0 < sum(opened) < len(QS)


def test_without_the_prefix_decision_the_answers_would_differ(engine, monkeypatch):
    """What the test above guards against: a continuation pass measuring the gate again on the
    answer tokens (and, as a new prompt, sparing its first position) gives other numbers here, so
    ``test_cached_path_equals_the_row_path`` fails unless the decision is carried over."""
    ivs = modes(engine)["gated mixed"]
    right = CC.cached_logliks(engine, rows(engine), ivs)
    monkeypatch.setattr(CC, "_carry", lambda state, question: setattr(state, "continuation", False))
    assert differs(CC.cached_logliks(engine, rows(engine), ivs), right)

    def first_questions_decision(state, question):  # every row follows question 0: also wrong here
        state.continuation = True
        for i, d in state.open.items():
            state.open[i] = d[:1].expand(len(question))

    monkeypatch.setattr(CC, "_carry", first_questions_decision)
    assert differs(CC.cached_logliks(engine, rows(engine), ivs), right)


def direct(engine, prefix, conts, ivs):
    """Each choice as its own full forward (logits from the model's own unembedding)."""
    model, out = engine.model, []
    for c in conts:
        with model.hooks(fwd_hooks=engine.hooks(ivs)), gate_prompt(len(prefix)):
            logits = model(torch.tensor([prefix + c]))[0]
        lp = torch.log_softmax(logits.double(), -1)
        out.append(torch.stack([lp[len(prefix) - 1 + j, t] for j, t in enumerate(c)]).mean())
    return torch.stack(out).float()


@pytest.mark.parametrize("mode", ["clamp", "dsg mixed"])
def test_one_token_choices_against_direct_forwards(engine, mode):
    """Choices of one token (no continuation pass) beside longer ones, and a question whose choices
    are all one token (no continuation pass at all)."""
    ivs = modes(engine)[mode]
    tok = engine.model.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    qrows = [(p, [ids("A"), ids(" B"), ids("C"), ids(" long answer")]) for p, _ in rows(engine)[:2]]
    qrows.append((rows(engine)[1][0], [ids("x"), ids("y")]))
    got = CC.cached_logliks(engine, qrows, ivs) + CC.cached_logliks(engine, qrows[-1:], ivs)
    for (p, cs), g in zip(qrows + qrows[-1:], got):
        torch.testing.assert_close(g, direct(engine, p, cs, ivs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_from, n_cached", [(CC.CACHE_FROM, len(QS)), (60, 3)])
def test_scoring_takes_the_cached_path_from_its_threshold(tiny, monkeypatch, cache_from, n_cached):
    """score_questions sends the questions with a prefix of at least ``CACHE_FROM`` tokens (all,
    by default) through the cached path and the others through the row path, in order."""
    monkeypatch.setattr(CC, "CACHE_FROM", cache_from)
    seen = []
    real = CC.cached_logliks
    monkeypatch.setattr(CC, "cached_logliks", lambda e, r, ivs=None: seen.extend(r) or real(e, r, ivs))
    iv = modes(tiny)["gated mixed"]
    scores = mcq.score_questions(tiny, QS, iv, scoring="cloze", batch_size=3)
    long = [p for p, _ in rows(tiny) if len(p) >= cache_from]
    assert [p for p, _ in seen] == long and len(long) == n_cached
    for s, ll in zip(scores, row_path(tiny, iv)):
        assert s.probs == pytest.approx(torch.softmax(ll, -1).tolist(), abs=1e-5)
