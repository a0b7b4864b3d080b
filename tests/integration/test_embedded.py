"""Integration tests on the embedded Gemma 3 270M and the shipped SAE (CI runs them)."""

import json

import pytest
import torch

from unlearn_core.data import loaders as D
from unlearn_core.evaluation import mcq
from unlearn_core.features import stats as F
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.saes import EMBEDDED_SAE_DIR

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import load_engine

    return load_engine(load_settings({"model": "embedded:gemma-3-270m", "saes": ["embedded"]}), progress=False)


@pytest.fixture(scope="module")
def question(shared_data):
    return D.load_wmdp_bio(str(shared_data)).questions[0]


def test_shipped_sae_matches_the_model(engine):
    cfg = json.loads((EMBEDDED_SAE_DIR / "cfg.json").read_text())
    hook = cfg["metadata"]["hook_name"]
    assert hook in engine.model.hook_dict
    assert engine.saes["embedded"].hook_name == hook
    assert cfg["d_in"] == engine.model.cfg.d_model == 640
    assert cfg["d_sae"] >= 4096
    assert (EMBEDDED_SAE_DIR / "sae_weights.safetensors").stat().st_size <= 25 * 2**20


def test_model_loads_and_is_sane(engine):
    m = engine.model
    assert (m.cfg.n_layers, m.cfg.d_model, m.cfg.d_vocab) == (18, 640, 262144)
    logits = m(m.to_tokens("The capital of France is"))[0, -1]
    top = m.tokenizer.decode([int(logits.argmax())])
    assert top.strip() in {"Paris", "the", "a"}, top


def test_scores_a_wmdp_question(engine, question):
    s = mcq.score_question(engine, question)
    assert s.scoring == "cloze" and sum(s.probs) == pytest.approx(1.0, abs=1e-5)
    assert len(s.loglik) == 4 and all(ll < 0 for ll in s.loglik)
    letter = mcq.score_question(engine, question, scoring="letter", style="plain")
    assert 0 < letter.mass <= 1 and all(0 <= p <= 1 for p in letter.probs)


def _codes_on(engine, q):
    text = mcq.cloze_prefix(q) + " " + " ".join(q.choices)
    return F.encode_tokens(engine, "embedded", engine.model.to_tokens(text))[0, 1:]


def test_zero_clamp_on_silent_feature_changes_nothing(engine, question):
    codes = _codes_on(engine, question)
    silent = [int(i) for i in torch.nonzero(codes.max(0).values <= 0).flatten()[:5]]
    assert silent
    base = mcq.score_question(engine, question)
    same = mcq.score_question(engine, question, [Intervention("embedded", tuple(silent), 0.0, "zero")])
    assert same.loglik == pytest.approx(base.loglik, abs=1e-5)


def test_strong_clamp_changes_probabilities(engine, question):
    codes = _codes_on(engine, question)
    active = torch.argsort(codes.max(0).values, descending=True)[:20].tolist()
    base = mcq.score_question(engine, question)
    hit = mcq.score_question(engine, question, [Intervention("embedded", tuple(active), 100.0)])
    assert max(abs(a - b) for a, b in zip(base.loglik, hit.loglik)) > 0.05


def test_generation_is_steered(engine):
    from unlearn_core.evaluation.metrics import generate

    prompt = "The cell membrane is made of"
    codes = F.encode_tokens(engine, "embedded", engine.model.to_tokens(prompt))[0, 1:]
    active = torch.argsort(codes.max(0).values, descending=True)[:20].tolist()
    base = generate(engine, prompt, None, max_new_tokens=12)
    steered = generate(engine, prompt, [Intervention("embedded", tuple(active), 100.0)], max_new_tokens=12)
    assert base.strip() and steered != base


def test_fast_blocks_match_transformer_lens_on_the_embedded_model(engine, question):
    """The copy-free attention/MLP/unembed forwards (installed by load_model) against TL's own."""
    m = engine.model
    toks = m.to_tokens(mcq.format_prompt(question, "plain"))
    hooks = engine.hooks([Intervention("embedded", (1, 2, 3, 4), 50.0)])
    with torch.inference_mode():
        fast = m.run_with_hooks(toks, fwd_hooks=hooks)[0, -8:]
        patched = {}
        for mod in [x for b in m.blocks for x in (b.attn, b.mlp)] + [m.unembed]:
            if "forward" in mod.__dict__:
                patched[mod] = mod.__dict__.pop("forward")
        try:
            assert len(patched) == 2 * m.cfg.n_layers + 1
            ref = m.run_with_hooks(toks, fwd_hooks=hooks)[0, -8:]
        finally:
            for mod, f in patched.items():
                mod.forward = f
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_fast_path_equals_straightforward_on_the_embedded_model(engine, question, scoring):
    """Slider fast path (cached upstream, last-position-only final block for letters, chunked
    cloze unembedding) against full forwards with the intervention hook."""
    from unlearn_core.method import fastpath

    codes = _codes_on(engine, question)
    feats = tuple(torch.argsort(codes.max(0).values, descending=True)[:10].tolist())
    values = [0.0, 30.0, 120.0]
    fast = fastpath.score_curve(engine, question, [Intervention("embedded", feats, 0.0)], values, scoring, "plain")
    for v, f in zip(values, fast):
        ref = mcq.score_question(engine, question, [Intervention("embedded", feats, v)], scoring, "plain")
        assert f.probs == pytest.approx(ref.probs, abs=1e-4)
        if scoring == "cloze":
            assert f.loglik == pytest.approx(ref.loglik, abs=1e-4)


def test_saved_weights_load_the_same_model_as_transformers(engine):
    """The fast load (memory-mapped TransformerLens weights) against a fresh transformers build."""
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM

    from unlearn_core.model.models import EMBEDDED_HF_NAME, HOOKED_WEIGHTS, embedded_model_dir

    folder = embedded_model_dir(engine.settings.cache_dir)
    assert (folder / HOOKED_WEIGHTS).exists()  # the engine above was loaded from it
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    ref = HookedTransformer.from_pretrained_no_processing(
        EMBEDDED_HF_NAME, hf_model=hf, tokenizer=engine.model.tokenizer
    )
    del hf
    fast = engine.model
    skip = {"init_weights", "use_hook_tokens"}  # the engine switches on hook_tokens (an identity hook, for gates)
    assert {k: v for k, v in fast.cfg.to_dict().items() if k not in skip} == {
        k: v for k, v in ref.cfg.to_dict().items() if k not in skip
    }
    ref_params = dict(ref.named_parameters())
    assert set(ref_params) == {k for k, _ in fast.named_parameters()}
    for k, v in fast.named_parameters():
        assert torch.equal(v, ref_params[k]), k
    toks = fast.to_tokens("Photosynthesis happens in the")
    with torch.inference_mode():
        torch.testing.assert_close(fast(toks), ref(toks), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_gated_clamp_on_the_embedded_model(engine, question, scoring):
    """rho measured independently (codes from the raw SAE weights in float64, special tokens left
    out); with tau just below it the gated clamp's logits are the static clamp's, with tau = rho
    they are the clean model's; the fast path agrees with the hooked forward both ways."""
    from model_helpers import manual_codes  # tests/ is on sys.path (conftest)

    from unlearn_core.method import fastpath
    from unlearn_core.method.gate import question_prompt
    from unlearn_core.method.interventions import special_ids

    m, loaded = engine.model, engine.saes["embedded"]
    toks = torch.tensor([question_prompt(engine, question, scoring, "plain")])
    _, cache = m.run_with_cache(toks, names_filter=[loaded.hook_name])
    x = cache[loaded.hook_name]
    if loaded.sae.cfg.apply_b_dec_to_input:  # this SAE encodes x - b_dec
        x = x - loaded.sae.b_dec
    f = manual_codes(loaded.sae, x)[0]
    special = set(special_ids(m.tokenizer))
    counted = [i for i, t in enumerate(toks[0].tolist()) if i > 0 and t not in special]
    frac = (f[counted] > 0).double().mean(0)
    partial = torch.nonzero((frac > 0.2) & (frac < 0.8)).flatten()  # features firing on part of the prompt
    feats = tuple(partial[torch.argsort(f[counted][:, partial].max(0).values, descending=True)[:2]].tolist())
    rho = sum(bool((f[i, list(feats)] > 0).any()) for i in counted) / len(counted)
    assert 0 < rho < 1
    c = 120.0
    clean = m(toks)[0, -1]
    with torch.no_grad(), m.hooks(fwd_hooks=engine.hooks([Intervention("embedded", feats, c)])):
        static = m(toks)[0, -1]
    with torch.no_grad(), m.hooks(fwd_hooks=engine.hooks([Intervention("embedded", feats, c, "gated", rho - 1e-4)])):
        above = m(toks)[0, -1]
    with torch.no_grad(), m.hooks(fwd_hooks=engine.hooks([Intervention("embedded", feats, c, "gated", rho)])):
        below = m(toks)[0, -1]
    assert (static - clean).abs().max() > 1e-2
    torch.testing.assert_close(above, static, atol=1e-5, rtol=0)
    torch.testing.assert_close(below, clean, atol=1e-6, rtol=0)
    for tau in (rho - 1e-4, rho):
        iv = Intervention("embedded", feats, c, "gated", tau)
        fast = fastpath.score_curve(engine, question, [iv], [c], scoring, "plain")[0]
        ref = mcq.score_question(engine, question, [iv], scoring, "plain")
        assert fast.probs == pytest.approx(ref.probs, abs=1e-4)


def test_rmu_with_coefficient_zero_equals_the_clean_model(engine, monkeypatch, tmp_path):
    """The RMU no-op control on the embedded model: c = 0, alpha > 0 (nothing to forget) leaves
    the outputs equal to the clean model's within 1e-4, through the saved delta and the variant."""
    from unlearn_core.evaluation.targets import get_target
    from unlearn_core.training import rmu

    monkeypatch.setattr(engine.settings, "cache_dir", str(tmp_path))
    cfg = rmu.default_config(engine.model_name, steering_coeff=0.0, alpha=1200.0, steps=3)
    card = rmu.train(engine, "zero", get_target("bio-basics"), cfg)
    assert card["steps_done"] == 3 and card["history"][-1]["retain_loss"] == 0.0
    toks = engine.model.to_tokens("The bacterium that causes anthrax is called")
    with torch.inference_mode():
        clean = engine.model(toks)
        with rmu.applied(engine, "rmu:zero"):
            out = engine.model(toks)
        assert torch.equal(engine.model(toks), clean)  # restored exactly
    assert float((out - clean).abs().max()) <= 1e-4


def test_rmu_steps_move_forget_more_than_retain(engine, monkeypatch, tmp_path):
    """Ten RMU steps with the embedded defaults push forget-text residuals at the steered layer
    toward c*u while retain-text residuals stay within 1% of their energy (a hook on the whole
    model, the delta applied as a variant)."""
    from unlearn_core.evaluation.targets import get_target
    from unlearn_core.training import rmu

    monkeypatch.setattr(engine.settings, "cache_dir", str(tmp_path))
    t = get_target("bio-basics")
    cfg = rmu.default_config(engine.model_name, steps=10, ctx=128).resolved(engine.model.cfg.n_layers)
    rmu.train(engine, "few", t, cfg)
    data = rmu.target_data(engine, t, cfg)
    hook = f"blocks.{cfg.layer}.hook_resid_post"
    control = rmu.control_vector(engine.model.cfg.d_model, cfg.seed, cfg.steering_coeff)

    def resid(windows):
        _, cache = engine.model.run_with_cache(torch.tensor(windows), names_filter=hook)
        return cache[hook][:, 1:]

    with torch.inference_mode():
        f0, r0 = resid(data.forget[:4]), resid(data.retain[:4])
        with rmu.applied(engine, "rmu:few"):
            f1, r1 = resid(data.forget[:4]), resid(data.retain[:4])
    dist = lambda f: float(((f - control) ** 2).mean())  # noqa: E731
    print(
        f"forget: distance to c*u {dist(f0):.1f} -> {dist(f1):.1f}; retain shift {float(((r1 - r0) ** 2).mean()):.1f} "
        f"of energy {float((r0**2).mean()):.1f}"
    )
    assert dist(f1) < 0.995 * dist(f0)  # steered toward c*u (measured: 1.7% closer after 10 steps of 128 tokens)
    assert float(((r1 - r0) ** 2).mean()) < 0.01 * float((r0**2).mean())  # retain kept within 1%


# the bio-basics default selection's features (DSG's Fisher top 5 on the shipped SAE), given so the
# test needs no selection pass
BIO_FEATURES = (1360, 7261, 5706, 2086, 3763)


@pytest.mark.parametrize("noop", [{"forget_weight": 0.0}, {"lr": 0.0}])
def test_persistent_no_op_control_equals_the_clean_model(engine, monkeypatch, tmp_path, noop):
    """The persistent method's no-op controls on the embedded model (no forget term; zero learning
    rate) leave the outputs equal to the clean model's within 1e-4, through the saved delta."""
    from unlearn_core.evaluation.targets import get_target
    from unlearn_core.training import persist as P
    from unlearn_core.training import variants as V

    monkeypatch.setattr(engine.settings, "cache_dir", str(tmp_path))
    cfg = P.default_config(engine.model_name, steps=3, features=BIO_FEATURES, **noop)
    card = P.train(engine, "zero", get_target("bio-basics"), cfg)
    assert card["steps_done"] == 3
    toks = engine.model.to_tokens("The bacterium that causes anthrax is called")
    with torch.inference_mode():
        clean = engine.model(toks)
        with V.applied(engine, "persist:zero"):
            out = engine.model(toks)
        assert torch.equal(engine.model(toks), clean)  # restored exactly
    assert float((out - clean).abs().max()) <= 1e-4


def test_persistent_steps_lower_the_features_and_keep_retain(engine, monkeypatch, tmp_path):
    """Ten steps with the embedded defaults: the selected features' activation on forget text falls
    (SAELens's encode of a hooked whole-model run, the delta applied as a variant), while the
    retain-text residual at the SAE's layer stays within 1% of its energy."""
    from unlearn_core.evaluation.targets import get_target
    from unlearn_core.training import persist as P
    from unlearn_core.training import rmu
    from unlearn_core.training import variants as V

    monkeypatch.setattr(engine.settings, "cache_dir", str(tmp_path))
    t = get_target("bio-basics")
    cfg = P.default_config(engine.model_name, steps=10, features=BIO_FEATURES)
    P.train(engine, "few", t, cfg)
    cfg, _, data = P.prepare(engine, t, cfg)
    sae = engine.saes["embedded"]
    feats = list(BIO_FEATURES)

    def read(windows):
        _, cache = engine.model.run_with_cache(torch.tensor(windows), names_filter=sae.hook_name)
        x = cache[sae.hook_name][:, 1:]
        return x, sae.sae.encode(x)[..., feats]

    with torch.inference_mode():
        (_, a0), (r0, _) = read(data.forget[:4]), read(data.retain[:4])
        with V.applied(engine, "persist:few"):
            (_, a1), (r1, _) = read(data.forget[:4]), read(data.retain[:4])
    print(f"selected activation on forget text {float(a0.sum()):.1f} -> {float(a1.sum()):.1f}")
    assert float(a0.sum()) > 0
    assert float(a1.sum()) < 0.5 * float(a0.sum())
    assert float(((r1 - r0) ** 2).mean()) < 0.01 * float((r0**2).mean())
    assert rmu.param_names(cfg.update_layers) == sorted(V.load(tmp_path, "persist:few")[0])
