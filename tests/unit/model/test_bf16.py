"""bfloat16, the automatic dtype on a GPU (``models.pick_dtype``), tested on the CPU.

The model runs in bf16 while the SAE stays fp32, so every path that mixes the two is run here on
the tiny model in bf16 next to the same weights in fp32: the intervention hooks, the fast blocks,
the fast slider path, letter and cloze scoring. Each tolerance is a named constant saying where
it comes from; "measured" numbers are the largest seen on this tiny model (questions of the bio
quiz), and the margin over them is stated. The embedded model's bf16-vs-fp32 numbers are in
``bench/bf16.py``'s table. Also here: ``--device cuda`` without CUDA is a one-line error.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from browser_helpers import free_port
from test_fast_blocks import _model as _block_model  # the same two configurations, in any dtype

from unlearn_core.evaluation import mcq
from unlearn_core.method import fastpath
from unlearn_core.method.interventions import Intervention, apply_to_resid
from unlearn_core.model import fast_blocks
from unlearn_core.model.forward import final_resid, target_logprobs, tokenize, unembed
from unlearn_core.model.tiny import NEVER_FIRES, TINY_HOOK, tiny_model, tiny_sae

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())

# bf16 keeps 8 significant bits: a value in [2**k, 2**(k+1)) is rounded to a multiple of 2**(k-7).
BF16_ULP_AT_1 = 2.0**-7

# Fast blocks vs TransformerLens's forwards, both in bf16, as a fraction of the output's largest
# |value|. Measured: at most 0.0071 (block_last on the plain model; attention 0.0049, the
# unembedding 0.0044, the Gemma-3-like blocks bit-equal), i.e. within one bf16 ulp of the scale
# (2**-7 = 0.0078); two ulps allowed. The same modules in bf16 vs fp32 differ by as much.
FAST_BLOCKS_BF16_REL = 2 * BF16_ULP_AT_1

# The fast slider path (fastpath.py) vs the straightforward hooks, both in bf16. Measured over
# the first 8 bio-quiz questions, all modes: probabilities (letter, or the cloze softmax over
# the four answers) 1.1e-4, cloze mean log-likelihoods 6.4e-4 (clamp; zero 6e-6, add and
# reconstruct bit-equal). Tolerances about 5x that. (In fp32 they agree to 1e-4,
# tests/test_fastpath.py; here the two paths round at different places: cached keys/values,
# other matmul shapes. On the embedded model that gives up to 2.4e-2 (bench/bf16.py), which is
# bf16's own noise there: the same bf16 hooks scoring letters in batches of 8 vs 1 differ by 2.0e-2.)
FASTPATH_BF16_PROB_TOL = 5e-4
FASTPATH_BF16_LOGLIK_TOL = 3e-3

# bf16 vs fp32 on the same weights (straightforward path), first N_QUESTIONS of the bio quiz.
# Measured on the tiny model: letter probabilities (small on a random model, 1e-3..4e-2) at most
# 1.6% relative clean, 2.0% clamped (4.6e-4 absolute); cloze answer probabilities 1.4e-3 clean,
# mean log-likelihoods 6.9e-3 clean. Clamped (c = 20), cloze moves more: 2.0e-2 and 9.6e-2,
# because bf16 flips whether a selected feature fires at a few positions (0-4 of ~700 per
# question, JumpReLU threshold) and clamp-when-active is a step there. Tolerances 2.5-3.5x the
# measured. The embedded model (bench/bf16.py, 20 questions): 1.6e-2 clean (letter and cloze),
# cloze clamped (bio-basics, c = 200) up to 0.20 from one flipped activation; no prediction changed.
LETTER_PROB_REL_TOL = 0.05
CLOZE_PROB_TOL = {False: 5e-3, True: 5e-2}  # by "clamped"
CLOZE_LOGLIK_TOL = {False: 2e-2, True: 0.25}
N_QUESTIONS = 8

# The log-softmax is taken in fp32 over the bf16 logits (forward.target_logprobs, mcq, fastpath).
# Taken in bf16 instead, it moves a token's log-probability (-3..-8 here, 104-token vocabulary)
# by up to 0.0225 (measured); the check below requires it to be visibly worse than 1e-3, so it
# can tell the two apart, and the fp32 one to equal the reference bit for bit.
LOGSOFTMAX_BF16_WORSE_THAN = 1e-3


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict:
    """The tiny engine in fp32 and the same weights in bf16 (SAE fp32 in both, as load_engine does)."""
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import engine_from_parts

    m32 = tiny_model(0)
    m16 = copy.deepcopy(m32).to(torch.bfloat16, print_details=False)
    out = {}
    for dtype, model in (("float32", m32), ("bfloat16", m16)):
        # the dtype setting keeps the two engines' caches (fast path LRU, disk) apart
        s = load_settings(
            {
                "model": "tiny",
                "saes": ["tiny"],
                "prompt_format": "plain",
                "scoring": "cloze",
                "dtype": dtype,
                "cache_dir": str(tmp_path_factory.mktemp(dtype)),
            }
        )
        out[dtype] = engine_from_parts(model, [tiny_sae(model.cfg.d_model)], s, model_name="tiny")
    return out


@pytest.fixture(scope="module")
def questions(shared_data):
    from unlearn_core.data.loaders import load_question_set

    return load_question_set("quiz:bio").questions[:N_QUESTIONS]


def _active_features(engine, q, k=3) -> tuple[int, ...]:
    """Features that fire on some positions of the question but not on most (so a clamp acts)."""
    pc = fastpath.prompt_cache(engine, q, "cloze", "plain", "tiny")
    freq = (pc.codes > 0).float().mean((0, 1))
    return tuple(i for i in freq.argsort(descending=True).tolist() if 0 < freq[i] < 0.9)[:k]


def _iv(engines, q, mode: str, value: float = 20.0) -> Intervention:
    feats = () if mode == "reconstruct" else _active_features(engines["float32"], q)
    return Intervention("tiny", feats, value, mode)


def test_fixture_is_a_bf16_model_with_an_fp32_sae(engines):
    e16, e32 = engines["bfloat16"], engines["float32"]
    assert e16.model.cfg.dtype == torch.bfloat16 and e32.model.cfg.dtype == torch.float32
    assert {p.dtype for p in e16.model.parameters()} == {torch.bfloat16}
    assert e16.saes["tiny"].sae.W_enc.dtype == torch.float32
    assert e16.cache_namespace() != e32.cache_namespace()
    for p16, p32 in zip(e16.model.parameters(), e32.model.parameters()):
        assert torch.equal(p16, p32.to(torch.bfloat16))  # the same weights


# --------------------------------------------------------------------------- interventions


@pytest.mark.parametrize("mode", ["clamp", "zero", "add", "reconstruct"])
def test_interventions_run_and_keep_bf16_in_the_residual_stream(engines, questions, mode):
    e16 = engines["bfloat16"]
    q = questions[0]
    iv = _iv(engines, q, mode)
    seen = {}

    def grab(x, hook):
        seen[hook.name] = x.dtype

    points = [TINY_HOOK, "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    tokens, _ = tokenize(e16.model, mcq.scored_texts(q, "cloze", "plain"))
    # capture hooks registered after the intervention's see what it returned
    hooks = e16.hooks([iv]) + [(p, grab) for p in points]
    with torch.inference_mode():
        out = final_resid(e16.model, tokens, hooks)
        clean = final_resid(e16.model, tokens)
    assert seen == {p: torch.bfloat16 for p in points}
    assert out.dtype == torch.bfloat16
    assert not torch.equal(out, clean)  # it acted
    # the pure function too: bf16 in, bf16 out, the SAE left in fp32
    resid = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    assert apply_to_resid(resid, e16.saes["tiny"].sae, iv, skip_first=True).dtype == torch.bfloat16
    assert e16.saes["tiny"].sae.W_dec.dtype == torch.float32


def test_sae_error_term_is_kept_in_bf16(engines, questions):
    """Spliced in with nothing ablated, the clamp hook gives back the clean run bit for bit:
    the error term is added back in fp32 and the sum rounds to the bf16 input exactly. (Tolerance
    0, measured; the reconstruction alone, error dropped, is far from it: shown below.)"""
    e16 = engines["bfloat16"]
    sae = e16.saes["tiny"].sae
    q = questions[0]
    tokens, _ = tokenize(e16.model, mcq.scored_texts(q, "cloze", "plain"))
    with torch.inference_mode():
        clean = final_resid(e16.model, tokens)
        spliced = final_resid(e16.model, tokens, e16.hooks([Intervention("tiny", (NEVER_FIRES,), 50.0)]))
        dropped = final_resid(e16.model, tokens, e16.hooks([Intervention("tiny", (), 0.0, "reconstruct")]))
    assert torch.equal(spliced, clean)
    assert (dropped.float() - clean.float()).abs().max() > 0.1  # dropping the error term would show
    # where the selected features do not fire, the hook's output is its input, bit for bit
    resid = torch.randn(1, 40, 32, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    feats = _active_features(engines["float32"], q, 1)
    with torch.inference_mode():
        fires = (sae.encode(resid.float())[0, :, list(feats)] > 0).any(-1)
        fires[0] = False  # BOS is never touched
        out = apply_to_resid(resid, sae, Intervention("tiny", feats, 20.0), skip_first=True)
    assert fires.any() and not fires.all()
    assert torch.equal(out[0, ~fires], resid[0, ~fires])
    assert not torch.equal(out[0, fires], resid[0, fires])


# --------------------------------------------------------------------------- fast blocks


def test_fast_blocks_stay_off_in_bf16():
    """The swaps are fp32-only (the docstrings: in bf16 the re-layout changes rounding), so a bf16
    model runs TransformerLens's own forwards, and the fast path's ``block_last`` is not used."""
    for kind in ("gemma3-like", "plain"):
        m = _block_model(kind, torch.bfloat16)
        assert fast_blocks.use_fast_attention(m) == 0
        assert fast_blocks.use_fast_gated_mlps(m) == 0
        assert not fast_blocks.use_fast_unembed(m)
        assert not any(fast_blocks.block_supported(b) for b in m.blocks)
        assert fast_blocks.use_fast_attention(_block_model(kind, torch.float32)) == 3


def _rel_err(fast: torch.Tensor, ref: torch.Tensor) -> float:
    return float((fast.float() - ref.float()).abs().max() / ref.float().abs().max())


@pytest.mark.parametrize("kind", ["gemma3-like", "plain"])
def test_fast_blocks_agree_with_transformer_lens_in_bf16(kind):
    """Called directly on bf16 modules, the copy-free forwards stay within two bf16 ulps of
    TransformerLens's (so turning them on for bf16 would be a speed question, not a correctness one)."""
    m = _block_model(kind, torch.bfloat16)
    x = torch.randn(2, 13, 32, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    errs = {}
    with torch.inference_mode():
        for i, block in enumerate(m.blocks):
            h = block.ln1(x)
            errs[f"attn{i}"] = _rel_err(fast_blocks.attend(block.attn, h, h), block.attn(h, h, h))
            if kind == "gemma3-like":
                errs[f"mlp{i}"] = _rel_err(fast_blocks._gated_mlp_forward(block.mlp, h), block.mlp(h))
            errs[f"block_last{i}"] = _rel_err(fast_blocks.block_last(block, x, 3), block(x)[:, -3:])
        errs["unembed"] = _rel_err(fast_blocks._unembed_forward(m.unembed, x), m.unembed(x))
    assert max(errs.values()) <= FAST_BLOCKS_BF16_REL, errs


# --------------------------------------------------------------------------- fast path


FASTPATH_VALUES = [0.0, 1.0, 20.0, 401.0]  # 401 is not a bf16 number: c must not be rounded to 400


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
@pytest.mark.parametrize("mode", ["clamp", "zero", "add", "reconstruct"])
def test_fastpath_equals_straightforward_in_bf16(engines, questions, mode, scoring, monkeypatch):
    e16 = engines["bfloat16"]
    q = questions[0]
    iv = _iv(engines, q, mode, 1.0)
    assert fastpath.supports(e16, [iv], scoring)
    seen = []
    real = fastpath.residual_delta
    monkeypatch.setattr(
        fastpath,
        "residual_delta",
        lambda sae, pc, iv, values, gate=None: seen.extend(values.tolist()) or real(sae, pc, iv, values, gate),
    )
    fast = fastpath.score_curve(e16, q, [iv], FASTPATH_VALUES, scoring, "plain", chunk=3)
    assert seen == FASTPATH_VALUES  # the clamp values reach the SAE unrounded (as the hook's c)
    slow = [mcq.score_question(e16, q, [replace(iv, value=v)], scoring=scoring, style="plain") for v in FASTPATH_VALUES]
    for f, s in zip(fast, slow):
        assert f.probs == pytest.approx(s.probs, abs=FASTPATH_BF16_PROB_TOL)
        if scoring == "cloze":
            assert f.loglik == pytest.approx(s.loglik, abs=FASTPATH_BF16_LOGLIK_TOL)
    # the batched configurations share the same code (score_configs)
    configs = [replace(iv, value=v) for v in FASTPATH_VALUES]
    seen.clear()
    for f, s in zip(fastpath.score_configs(e16, q, configs, scoring, "plain"), slow):
        assert f.probs == pytest.approx(s.probs, abs=FASTPATH_BF16_PROB_TOL)
    assert sorted(seen) == FASTPATH_VALUES


# --------------------------------------------------------------------------- bf16 vs fp32 scores


@pytest.mark.parametrize("intervened", [False, True], ids=["clean", "clamp"])
@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_bf16_scores_within_tolerance_of_fp32(engines, questions, scoring, intervened):
    res = {}
    for dtype, e in engines.items():
        ivs = [_iv(engines, q, "clamp", 20.0) for q in questions] if intervened else [None] * len(questions)
        res[dtype] = [
            mcq.score_question(e, q, [iv] if iv else None, scoring=scoring, style="plain")
            for q, iv in zip(questions, ivs)
        ]
    for s16, s32 in zip(res["bfloat16"], res["float32"]):
        if scoring == "letter":
            assert s16.probs == pytest.approx(s32.probs, rel=LETTER_PROB_REL_TOL)
        else:
            assert s16.probs == pytest.approx(s32.probs, abs=CLOZE_PROB_TOL[intervened])
            assert s16.loglik == pytest.approx(s32.loglik, abs=CLOZE_LOGLIK_TOL[intervened])


def test_scores_are_fp32_and_log_softmax_is_taken_in_fp32(engines, questions):
    e16 = engines["bfloat16"]
    m = e16.model
    q = questions[0]
    tokens, lens = tokenize(m, mcq.scored_texts(q, "cloze", "plain")[:1])
    n = int(lens[0])
    with torch.inference_mode():
        x = final_resid(m, tokens)[0, : n - 1]
        logits = unembed(m, x)
        assert logits.dtype == torch.bfloat16  # the model's own logits are bf16 ...
        got = target_logprobs(m, x, tokens[0, 1:n])
        ref = torch.log_softmax(logits.float(), -1).gather(-1, tokens[0, 1:n, None])[:, 0]
        in_bf16 = torch.log_softmax(logits, -1).gather(-1, tokens[0, 1:n, None])[:, 0]
    assert got.dtype == torch.float32  # ... the log-softmax over them is fp32
    assert torch.equal(got, ref)
    assert (in_bf16.float() - ref).abs().max() > LOGSOFTMAX_BF16_WORSE_THAN  # so the check can tell
    assert mcq.cloze_logliks(e16, q).dtype == torch.float32
    probs, mass = mcq.letter_probs_batch(e16, [mcq.format_prompt(q, "plain")])
    assert probs.dtype == torch.float32 and mass.dtype == torch.float32


# --------------------------------------------------------------------------- --device cuda without CUDA


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_pick_device_says_what_to_do(no_cuda, monkeypatch):
    from unlearn_core.model.models import pick_device

    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu" and pick_device(" CPU ") == "cpu"
    for dev in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(ValueError, match=r"CUDA is not available.*use --device cpu or --device auto"):
            pick_device(dev)
    with pytest.raises(ValueError, match="'gpu' is not one of auto, cpu, cuda"):
        pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda") == "cuda" and pick_device("cuda:0") == "cuda:0" and pick_device("auto") == "cuda"
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        pick_device("cuda:1")


@pytest.mark.parametrize(
    "argv",
    [
        ["info", "--device", "cuda"],
        ["mcq", "--device", "cuda:0"],
        ["demo", "--tiny", "--device", "cuda"],
        ["serve", "--device", "cuda", "--port", "1"],
        ["serve", "--tiny", "--device", "cuda", "--port", "1"],
        ["info", "--device", "gpu"],
    ],
)
def test_cli_device_errors_are_one_line(no_cuda, argv, capsys, monkeypatch):
    from unlearn_core import cli, server

    def started(*a, **k):  # the check must come before the server starts (it would block here)
        raise AssertionError("the server started")

    monkeypatch.setattr(server, "serve", started)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: device ")
    assert "--device cpu or --device auto" in err and "Traceback" not in err


def test_device_from_the_environment_is_checked_too(no_cuda, monkeypatch, capsys):
    from unlearn_core import cli

    monkeypatch.setenv("UNLEARN_DEVICE", "cuda")
    assert cli.main(["mcq", "--questions", "quiz:bio"]) == 2
    assert "error: device 'cuda' requested but CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_serve_with_cuda_but_no_cuda_exits_cleanly():
    """End to end: the server start must not listen and leave a traceback in its loader thread."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "unlearn_core", "serve", "--device", "cuda", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
    assert "CUDA is not available" in r.stderr and "--device cpu" in r.stderr
