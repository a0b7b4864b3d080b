"""Per-feature clamp values c_i = c * scale_i: the scale rule, the hook, the fast path (same numbers)
and a target that asks for them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_fastpath import VALUES, Q, _active_features

from unlearn_core.evaluation import mcq
from unlearn_core.evaluation import targets as T
from unlearn_core.method import fastpath
from unlearn_core.method.clamp_scales import max_act_scales
from unlearn_core.method.interventions import Intervention, apply_to_resid
from unlearn_core.model.tiny import NEVER_FIRES


def test_scales_are_each_features_max_over_the_median():
    peaks = torch.tensor([0.0, 2.0, 4.0, 8.0, 100.0, 0.0])
    assert max_act_scales(peaks, (1, 2, 3)) == pytest.approx((0.5, 1.0, 2.0))  # median 4
    assert max_act_scales(peaks, [1, 2, 3, 4]) == pytest.approx((1 / 3, 2 / 3, 4 / 3, 100 / 6))  # median (4+8)/2
    assert max_act_scales(peaks, (5, 2)) == (1.0, 1.0)  # never fired: the median's scale
    assert max_act_scales(peaks, (0,)) == (1.0,) and max_act_scales(peaks, ()) == ()


def test_scales_are_validated():
    Intervention("s", (1, 2), 10.0, scales=(0.5, 2))
    for bad in ((1.0,), (1.0, 0.0), (1.0, -2.0), (1.0, float("nan")), (1.0, 1e9)):
        with pytest.raises(ValueError, match="scale"):
            Intervention("s", (1, 2), 10.0, scales=bad)


def test_the_hook_sets_each_active_feature_to_minus_c_times_its_scale(tiny):
    sae = tiny.saes["tiny"].sae
    x = torch.randn(2, 7, sae.W_enc.shape[0], generator=torch.Generator().manual_seed(3))
    f = sae.encode(x)
    feats = [i for i in range(f.shape[-1]) if 0 < (f[:, 1:, i] > 0).float().mean() < 1][:3]
    scales = (0.5, 1.0, 3.0)
    out = apply_to_resid(x.clone(), sae, Intervention("tiny", tuple(feats), 10.0, scales=scales), skip_first=True)
    g = f.clone()
    g[:, 0] = 0.0
    for i, s in zip(feats, scales):
        g[..., i] = torch.where(g[..., i] > 0, torch.tensor(-10.0 * s), g[..., i])
    want = x + (sae.decode(g) - sae.decode(torch.where(torch.arange(7)[None, :, None] == 0, 0.0, f)))
    want[:, 0] = x[:, 0]
    assert torch.allclose(out, want, atol=1e-5)
    uniform = apply_to_resid(x.clone(), sae, Intervention("tiny", tuple(feats), 10.0), skip_first=True)
    ones = apply_to_resid(x.clone(), sae, Intervention("tiny", tuple(feats), 10.0, scales=(1.0,) * 3), True)
    assert torch.equal(uniform, ones) and not torch.allclose(uniform, out)


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
@pytest.mark.parametrize("mode, gate", [("clamp", None), ("add", None), ("dsg", 0.0), ("zero", None)])
def test_the_fast_path_gives_the_same_numbers_with_scales(tiny, scoring, mode, gate):
    feats = tuple(_active_features(tiny, 3))
    iv = Intervention("tiny", feats, 1.0, mode, gate, scales=(0.25, 1.0, 4.0))
    assert fastpath.supports(tiny, [iv], scoring)
    fast = fastpath.score_curve(tiny, Q, [iv], VALUES, scoring, "plain", chunk=2)
    ref = [mcq.score_question(tiny, Q, [replace(iv, value=v)], scoring=scoring, style="plain") for v in VALUES]
    for f, r in zip(fast, ref):
        assert f.probs == pytest.approx(r.probs, abs=1e-4)
    uniform = fastpath.score_curve(tiny, Q, [replace(iv, scales=None)], VALUES, scoring, "plain")
    if mode != "zero":  # the scales change what a clamp does
        assert max(abs(a - b) for a, b in zip(fast[-1].probs, uniform[-1].probs)) > 1e-5
    configs = [iv, replace(iv, value=7.0), Intervention("tiny", (NEVER_FIRES,), 5.0, scales=(2.0,))]
    batched = fastpath.score_configs(tiny, Q, configs, scoring, "plain", chunk=2)
    for f, c in zip(batched, configs):
        assert f.probs == pytest.approx(
            mcq.score_question(tiny, Q, [c], scoring=scoring, style="plain").probs, abs=1e-4
        )


def test_a_target_asks_for_forget_max_scales(tiny, shared_data, tmp_path):
    base = '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n'
    (tmp_path / "t.toml").write_text(base + '[x.intervention]\nscale="forget-max"\nc=50\n')
    t = T.load_targets(str(tmp_path / "t.toml"))["x"]
    assert t.intervention.scale == "forget-max" and t.to_dict()["intervention"]["scale"] == "forget-max"
    (tmp_path / "t.toml").write_text(base + '[x.intervention]\nscale="loudest"\n')
    with pytest.raises(T.TargetError, match="intervention scale must be one of"):
        T.load_targets(str(tmp_path / "t.toml"))
    bio = T.get_target("bio-basics")
    assert "scale" not in bio.to_dict()["intervention"]  # the uniform default: the dict as before
    assert T.default_intervention(tiny, T.replace_intervention(bio, n=5)).scales is None
    scaled = T.replace_intervention(bio, n=5, scale="forget-max")
    iv = T.default_intervention(tiny, scaled)
    sel = T.select_for_target(tiny, scaled)
    assert iv.features == tuple(r["feature"] for r in sel["features"])
    assert iv.scales == max_act_scales(sel["forget_stats"].max_act, iv.features)
    assert sorted(iv.scales)[2] == pytest.approx(1.0)  # the median feature gets c itself
