"""The clamp against an independent computation of the formula in method.md."""

import pytest
import torch
from model_helpers import active_features, manual_clamp, manual_codes, run

from unlearn_core.evaluation.metrics import generate
from unlearn_core.method.interventions import Intervention, intervened, parse_features
from unlearn_core.model.tiny import ALWAYS_FIRES, NEVER_FIRES


@pytest.mark.parametrize("c", [0.0, 5.0, 50.0])
@pytest.mark.parametrize("mode", ["clamp", "reconstruct"])
def test_clamp_matches_independent_formula(tiny, c, mode):
    feats = active_features(tiny)
    x, out = run(tiny, [Intervention("tiny", tuple(feats), c, mode)])
    expected = manual_clamp(tiny.saes["tiny"].sae, x, feats, c, mode)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if mode == "clamp" and c > 0:
        assert (out - x).abs().max() > 1e-3, "a clamp on active features must change the residual"


def test_output_equals_input_where_no_selected_feature_fires(tiny):
    feats = active_features(tiny, k=1)
    x, out = run(tiny, [Intervention("tiny", tuple(feats), 30.0)])
    f = manual_codes(tiny.saes["tiny"].sae, x)
    quiet = (f[0, :, feats] <= 0).all(-1)
    quiet[0] = True
    assert quiet.any() and (~quiet).any()
    torch.testing.assert_close(out[0, quiet], x[0, quiet], atol=1e-5, rtol=1e-5)
    assert (out[0, ~quiet] - x[0, ~quiet]).abs().max() > 1e-3


def test_never_firing_feature_changes_nothing_even_at_c_zero(tiny):
    x, out = run(tiny, [Intervention("tiny", (NEVER_FIRES,), 0.0, "zero")])
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_bos_untouched_in_every_mode(tiny):
    for mode in ["clamp", "zero", "add", "reconstruct"]:
        x, out = run(tiny, [Intervention("tiny", (ALWAYS_FIRES,), 40.0, mode)])
        torch.testing.assert_close(out[:, 0], x[:, 0], atol=0, rtol=0)


def test_zero_ablation_sets_active_features_to_zero(tiny):
    feats = active_features(tiny)
    x, out = run(tiny, [Intervention("tiny", tuple(feats), 99.0, "zero")])  # value ignored: c = 0
    expected = manual_clamp(tiny.saes["tiny"].sae, x, feats, 0.0, "clamp")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_add_mode_adds_minus_c_times_decoder_row_everywhere(tiny):
    sae = tiny.saes["tiny"].sae
    feats = (NEVER_FIRES, 5)  # unconditional: even a feature that never fires is added
    x, out = run(tiny, [Intervention("tiny", feats, 3.0, "add")])
    delta = -3.0 * sae.W_dec[list(feats)].sum(0)
    torch.testing.assert_close(out[:, 1:], x[:, 1:] + delta, atol=1e-5, rtol=1e-5)


def test_reconstruct_without_features_is_the_plain_splice(tiny):
    sae = tiny.saes["tiny"].sae
    x, out = run(tiny, [Intervention("tiny", (), 0.0, "reconstruct")])
    f = manual_codes(sae, x)
    torch.testing.assert_close(
        out[:, 1:], (f @ sae.W_dec.double() + sae.b_dec.double()).float()[:, 1:], atol=1e-5, rtol=1e-5
    )


def test_generated_tokens_are_intervened(tiny):
    """KV-cached generation must equal step-by-step full recomputation under the same hooks."""
    m = tiny.model
    feats = active_features(tiny)
    ivs = [Intervention("tiny", tuple(feats), 25.0)]
    prompt = "Cells divide by"
    with_cache = generate(tiny, prompt, ivs, max_new_tokens=12)
    toks = m.to_tokens(prompt)
    with intervened(m, ivs, tiny.saes):
        for _ in range(12):
            nxt = m(toks)[0, -1].argmax()
            toks = torch.cat([toks, nxt.view(1, 1)], 1)
    full = m.tokenizer.decode(toks[0, m.to_tokens(prompt).shape[1] :])
    assert with_cache == full
    assert with_cache != generate(tiny, prompt, None, max_new_tokens=12)


def test_several_saes_at_once(tiny):
    from unlearn_core.model.engine import engine_from_parts
    from unlearn_core.model.tiny import tiny_sae

    s1 = tiny.saes["tiny"]
    s2 = tiny_sae(seed=7, hook_name="blocks.1.hook_resid_post", key="tiny-l1")
    eng = engine_from_parts(tiny.model, [s1, s2])
    ivs = [Intervention("tiny", tuple(active_features(tiny)), 10.0), Intervention("tiny-l1", (ALWAYS_FIRES,), 10.0)]
    hooks = eng.hooks(ivs)
    assert sorted(h for h, _ in hooks) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    base = tiny.model("Hello world")
    with intervened(tiny.model, ivs[:1], eng.saes):
        one = tiny.model("Hello world")
    with intervened(tiny.model, ivs, eng.saes):
        two = tiny.model("Hello world")
    assert (one - base).abs().max() > 1e-4 and (two - one).abs().max() > 1e-4


def test_validation_errors(tiny):
    from unlearn_core.method.interventions import validate

    with pytest.raises(ValueError):
        Intervention("tiny", (1,), float("nan"))
    with pytest.raises(ValueError):
        Intervention("tiny", (1,), 1e9)
    with pytest.raises(ValueError):
        Intervention("tiny", (), 5.0, "clamp")
    with pytest.raises(ValueError):
        Intervention("tiny", (1,), 5.0, "bogus")
    with pytest.raises(ValueError, match="out of range"):
        validate([Intervention("tiny", (10_000,), 5.0)], tiny.saes)
    with pytest.raises(KeyError):
        validate([Intervention("nope", (1,), 5.0)], tiny.saes)
    assert parse_features("3, 5 7") == (3, 5, 7)
    with pytest.raises(ValueError):
        parse_features("3,x")
