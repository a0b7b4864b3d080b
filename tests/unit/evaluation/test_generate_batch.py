"""Batched greedy generation gives, prompt by prompt, the texts ``metrics.generate`` gives alone:
clean, under a static clamp, and under gates that open for some prompts of a batch and not for
others, with rows that stop at EOS early beside rows that run to the end."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import active_features, gemma3_like_engine

from unlearn_core.evaluation.generate_batch import generate_greedy
from unlearn_core.evaluation.metrics import generate
from unlearn_core.method.gate import rho_of_tokens
from unlearn_core.method.interventions import Intervention

PROMPTS = ["The cell", "Mitochondria make energy for the", "A", "Water boils at one hundred degrees", "DNA is"]
N = 12  # new tokens, as the attack bench generates


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Local layers with a window of 4: every prompt and generation runs past it."""
    return gemma3_like_engine(str(tmp_path_factory.mktemp("local")), 4)


@pytest.fixture(params=["tiny", "local"])
def engine(request, tiny, local):
    return tiny if request.param == "tiny" else local


def gated_modes(engine) -> dict[str, list[Intervention]]:
    feats = tuple(active_features(engine, k=2))
    rows = [engine.model.to_tokens(p)[0].tolist() for p in PROMPTS]
    rhos = sorted(set(rho_of_tokens(engine, "tiny", feats, rows)))
    tau = (rhos[len(rhos) // 2 - 1] + rhos[len(rhos) // 2]) / 2  # opens on some prompts only
    return {
        "clean": [],
        "clamp": [Intervention("tiny", feats, 30.0)],
        "gated mixed": [Intervention("tiny", feats, 30.0, "gated", gate=tau)],
        "dsg mixed": [Intervention("tiny", feats, 30.0, "dsg", gate=tau)],
    }


@pytest.mark.parametrize("mode", ["clean", "clamp", "gated mixed", "dsg mixed"])
def test_batched_equals_one_at_a_time(engine, mode):
    ivs = gated_modes(engine)[mode]
    single = [generate(engine, p, ivs or None, max_new_tokens=N) for p in PROMPTS]
    assert generate_greedy(engine, PROMPTS, ivs, max_new_tokens=N) == single


def test_the_gates_decide_per_prompt_and_matter(engine):
    """Under the mixed gate some prompts generate as clean and some as clamped, and the two differ
    there: a batch sharing one decision, or deciding again on generated tokens, would show."""
    m = gated_modes(engine)
    clean, clamp = (generate_greedy(engine, PROMPTS, m[k], max_new_tokens=N) for k in ("clean", "clamp"))
    gated = generate_greedy(engine, PROMPTS, m["gated mixed"], max_new_tokens=N)
    shut = [g == c for g, c in zip(gated, clean)]
    opened = [g == k != c for g, k, c in zip(gated, clamp, clean)]
    assert (
        all(s or o for s, o in zip(shut, opened))
        and any(opened)
        and any(s and c != k for s, c, k in zip(shut, clean, clamp))
    )


def test_rows_that_stop_at_eos_beside_rows_that_do_not(tiny, monkeypatch):
    """An EOS bias that ends some prompts' generations after a few tokens and not others'."""
    from unlearn_core.evaluation import generate_batch as GB

    eng = copy.copy(tiny)
    eng.model = copy.deepcopy(tiny.model)
    eos = eng.model.tokenizer.eos_token_id
    with torch.no_grad():
        eng.model.b_U[eos] = 1.0
    single = [generate(eng, p, None, max_new_tokens=N) for p in PROMPTS]
    lengths = {len(s) for s in single}
    assert min(lengths) < N and max(lengths) == N, f"the EOS bias should stop some rows only: {single}"
    assert generate_greedy(eng, PROMPTS, None, max_new_tokens=N) == single
    monkeypatch.setattr(GB, "BATCH", 2)  # batches of two, the last one alone
    assert generate_greedy(eng, PROMPTS, None, max_new_tokens=N) == single


def test_lengths_are_checked(tiny):
    with pytest.raises(ValueError):
        generate_greedy(tiny, ["Hi"], None, max_new_tokens=0)
