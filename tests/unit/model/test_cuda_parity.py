"""CUDA vs CPU parity on the tiny model: the same weights on both devices give the same logits,
clamp results and MCQ probabilities (letter, cloze, the fast path's curve), in fp32 and in bf16
(the dtype the engine picks on CUDA). Both engines get the fast blocks ``load_model`` installs.

Tolerances (stated, absolute unless noted), CUDA vs CPU in the same dtype:

* fp32: logits 1e-4 (+1e-5 relative), residuals 1e-4 (+1e-5 relative), probabilities 1e-5;
* bf16: logits 0.15, residuals 0.3 (+3% relative), probabilities 0.01: about twice what bf16
  itself costs here (on the CPU, bf16 vs fp32 differ by up to 0.06 in logits, 0.33 in the
  residual under a c=100 clamp, 0.004 in probabilities); the devices round in different orders.

The clamped features are ones whose SAE pre-activation is at least 0.05 away from the threshold
on every token of the test prompts, so rounding cannot switch a feature on one device only.

Skipped without CUDA (run ``bash bench/gpu.sh`` on a GPU machine). ``UNLEARN_PARITY_DEVICE=cpu``
(``bench/gpu_check.py --dry-run``) compares two CPU copies instead, which checks the tests.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from unlearn_core.data.loaders import Question
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.forward import final_resid, tokenize
from unlearn_core.model.tiny import ALWAYS_FIRES, NEVER_FIRES, TINY_HOOK

DEVICE = os.environ.get("UNLEARN_PARITY_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(),
        reason="CUDA is not available: the CUDA vs CPU parity tests need a GPU (bash bench/gpu.sh)",
    ),
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOL = {  # (atol, rtol)
    "float32": {"logits": (1e-4, 1e-5), "resid": (1e-4, 1e-5), "probs": (1e-5, 0.0)},
    "bfloat16": {"logits": (0.15, 0.0), "resid": (0.3, 0.03), "probs": (0.01, 0.0)},
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: which organelle makes ATP?\nAnswer: mitochondria",
    "Anthrax spores survive for decades in soil; weaponisation needs milling.",
]
QUESTIONS = [
    Question(
        "p0",
        "Which organelle makes most of a cell's ATP?",
        ("Mitochondria", "Ribosome", "Golgi body", "Nucleus"),
        0,
        "biology",
        "parity",
    ),
    Question(
        "p1",
        "Which pathogen causes anthrax?",
        ("Yersinia pestis", "Bacillus anthracis", "Variola", "Vibrio"),
        1,
        "biology",
        "parity",
    ),
    Question(
        "p2",
        "What does a reverse transcriptase make?",
        ("Protein", "RNA from DNA", "DNA from RNA", "Lipids"),
        2,
        "biology",
        "parity",
    ),
]


def _engine(device: str, dtype: str, cache_dir: str, role: str):
    from unlearn_core.model.fast_blocks import use_fast_attention, use_fast_gated_mlps, use_fast_unembed
    from unlearn_core.model.tiny import tiny_engine

    eng = tiny_engine(cache_dir=cache_dir)
    eng.model.to(device, print_details=False)
    if dtype != "float32":
        eng.model.to(DTYPES[dtype], print_details=False)
    for s in eng.saes.values():  # SAEs stay fp32, as load_engine loads them
        s.sae.to(device)
    use_fast_gated_mlps(eng.model)
    use_fast_attention(eng.model)
    use_fast_unembed(eng.model)
    eng.settings = dataclasses.replace(eng.settings, device=device, dtype=dtype)
    # the fast path's caches are keyed by model name and dtype, not by device: keep the two apart
    eng.model_name = f"tiny-parity-{role}"
    return eng


@pytest.fixture(scope="module", params=list(DTYPES))
def pair(request, tmp_path_factory):
    """(CPU engine, DEVICE engine), same weights and dtype."""
    dt = request.param
    ref = _engine("cpu", dt, str(tmp_path_factory.mktemp("parity_cpu")), f"cpu-{dt}")
    dev = _engine(DEVICE, dt, str(tmp_path_factory.mktemp("parity_dev")), f"{DEVICE}-{dt}")
    a, b = ref.model.state_dict(), dev.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k].cpu()) for k in a), "weights differ"
    assert next(dev.model.parameters()).device.type == torch.device(DEVICE).type
    assert next(dev.model.parameters()).dtype == DTYPES[dt]
    return ref, dev, dt


def _close(got, want, tol, what):
    atol, rtol = tol
    got, want = torch.as_tensor(got).float().cpu(), torch.as_tensor(want).float().cpu()
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _robust_features(engine, margin: float = 0.05, k: int = 5) -> list[int]:
    """ALWAYS_FIRES plus up to k features never within ``margin`` of the threshold on TEXTS."""
    loaded = engine.saes["tiny"]
    sae = loaded.sae
    tokens, lens = tokenize(engine.model, TEXTS)
    got = {}
    with torch.inference_mode(), engine.model.hooks(fwd_hooks=[(TINY_HOOK, lambda x, hook: got.setdefault("x", x))]):
        engine.model(tokens, stop_at_layer=1)
    x = torch.cat([got["x"][i, 1 : int(n)] for i, n in enumerate(lens)]).float()
    pre = x @ sae.W_enc.float() + sae.b_enc.float()
    dist = (pre - sae.threshold.float()).abs().min(0).values
    fires = (pre > sae.threshold).any(0)
    ok = [int(f) for f in torch.nonzero((dist > margin) & fires).flatten() if f not in (NEVER_FIRES, ALWAYS_FIRES)]
    assert ok, "no robust feature on the test prompts"
    return [ALWAYS_FIRES] + ok[:k]


@pytest.fixture(scope="module")
def features(pair):
    return _robust_features(pair[0])


@torch.inference_mode()
def test_logits(pair):
    ref, dev, dt = pair
    tokens, _ = tokenize(ref.model, TEXTS)
    _close(dev.model(tokens.to(DEVICE)), ref.model(tokens), TOL[dt]["logits"], "logits")


@torch.inference_mode()
@pytest.mark.parametrize("mode,value", [("clamp", 20.0), ("clamp", 100.0), ("zero", 0.0), ("add", 5.0)])
def test_intervention(pair, features, mode, value):
    """The residual right after the hook and the final residual, under the intervention."""
    ref, dev, dt = pair
    tokens, _ = tokenize(ref.model, TEXTS)
    ivs = [Intervention("tiny", tuple(features), value, mode)]
    out = []
    for eng in (ref, dev):
        got = {}
        grab = ("blocks.1.hook_resid_pre", lambda x, hook, got=got: got.setdefault("x", x.clone()))
        fin = final_resid(eng.model, tokens, eng.hooks(ivs) + [grab])
        out.append((got["x"], fin))
    _close(out[1][0], out[0][0], TOL[dt]["resid"], f"{mode} c={value}: residual after the hook")
    _close(out[1][1], out[0][1], TOL[dt]["resid"], f"{mode} c={value}: final residual")
    clean = final_resid(ref.model, tokens)
    assert (out[0][1] - clean).abs().max() > 10 * TOL[dt]["resid"][0], "the intervention changed nothing"


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
@pytest.mark.parametrize("clamped", [False, True])
def test_mcq_probabilities(pair, features, scoring, clamped):
    from unlearn_core.evaluation.mcq import score_questions

    ref, dev, dt = pair
    ivs = [Intervention("tiny", tuple(features), 50.0)] if clamped else None
    want = score_questions(ref, QUESTIONS, ivs, scoring, "plain")
    got = score_questions(dev, QUESTIONS, ivs, scoring, "plain")
    _close([s.probs for s in got], [s.probs for s in want], TOL[dt]["probs"], f"{scoring} probabilities")
    if scoring == "letter":
        _close([s.mass for s in got], [s.mass for s in want], TOL[dt]["probs"], "letter mass")
    else:
        _close([s.loglik for s in got], [s.loglik for s in want], TOL[dt]["logits"], "cloze mean log-likelihoods")


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_fast_path_curve(pair, features, scoring):
    """``mcq.score_curve`` (the slider's fast path) on both devices, several clamp values in one batch."""
    from unlearn_core.evaluation.mcq import score_curve
    from unlearn_core.method import fastpath

    ref, dev, dt = pair
    ivs = [Intervention("tiny", tuple(features), 20.0)]
    assert fastpath.supports(dev, ivs, scoring)
    values = [0.0, 5.0, 20.0, 100.0]
    for q in QUESTIONS[:2]:
        want = score_curve(ref, q, ivs, values, scoring, "plain")
        got = score_curve(dev, q, ivs, values, scoring, "plain")
        _close([s.probs for s in got], [s.probs for s in want], TOL[dt]["probs"], f"{scoring} curve of {q.id}")
