"""SAE training on the tiny backend: the activation cache (equal to the hook's values, resumable
shard by shard, refusing another build's folder), training in pieces that resumes to the same
weights as an uninterrupted run, and a saved SAE that loads through SAELens and through the
project's loader."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from unlearn_core.evaluation.metrics import corpus_windows
from unlearn_core.features.stats import counted_mask
from unlearn_core.model.forward import pad_right
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.training import activation_cache as AC
from unlearn_core.training import train_sae as TRN

HOOK = "blocks.0.hook_resid_post"
SIZE = dict(d_sae=48, k=4, n_tokens=3000, epochs=2.0, batch_size=128, ctx=32)  # seconds on a CPU
CFG = TRN.TrainSAEConfig(
    layer=0, lr=3e-3, lr_warm_up_steps=2, dead_feature_window=5, checkpoint_every=3, seed=1, **SIZE
)


@pytest.fixture
def engine(tmp_path, shared_data):
    return tiny_engine(cache_dir=str(tmp_path))


@pytest.fixture(scope="module")
def docs(shared_data):
    from unlearn_core.data.loaders import load_corpus

    return load_corpus("webtext-train", str(shared_data))[:200]


def test_cache_equals_the_hook_and_resumes_shard_by_shard(engine, docs, tmp_path):
    spec = AC.CacheSpec(hook_name=HOOK, n_tokens=1500, ctx=32, windows_per_shard=10, batch_size=4)
    m = AC.build(engine, docs, tmp_path / "acts", spec)
    assert m["complete"] and len(m["shards"]) >= 4
    acts = AC.load(tmp_path / "acts")
    assert acts.dtype == torch.float16 and acts.shape[1] == engine.model.cfg.d_model
    # independent: the whole model run with TransformerLens's cache, counted positions kept
    windows = corpus_windows(engine.model, docs, 1500, 32)
    toks, lens = pad_right(windows, 0)
    _, cache = engine.model.run_with_cache(toks, names_filter=HOOK)
    want = cache[HOOK][counted_mask(engine, toks, lens)]
    assert acts.shape[0] == want.shape[0] == m["n_acts"]
    torch.testing.assert_close(acts.float(), want.float(), atol=1e-3, rtol=1e-3)  # float16 rounding
    # a killed build: the second shard and everything after it missing
    names = sorted(m["shards"])
    for name in names[1:]:
        (tmp_path / "acts" / name).unlink()
    m2 = json.loads((tmp_path / "acts" / AC.MANIFEST).read_text())
    m2["complete"] = False
    m2["shards"] = {names[0]: m2["shards"][names[0]]}
    m2["seconds"] = 1000.0  # the killed piece's time (made large so that it shows)
    (tmp_path / "acts" / AC.MANIFEST).write_text(json.dumps(m2))
    m3 = AC.build(engine, docs, tmp_path / "acts", spec)
    assert m3["shards"] == m["shards"]
    assert 1000.0 < m3["seconds"] < 1000.0 + 600  # the resumed piece adds its own time to the first's
    assert torch.equal(AC.load(tmp_path / "acts"), acts)
    with pytest.raises(AC.ActivationCacheError, match="other texts or settings"):
        AC.build(engine, docs[:50], tmp_path / "acts", spec)


def _weights(sae) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def test_training_in_pieces_equals_an_uninterrupted_run(engine, docs, tmp_path):
    AC.build(engine, docs, tmp_path / "acts", replace(CFG.cache_spec(), windows_per_shard=16))
    acts = AC.load(tmp_path / "acts")
    steps = TRN.total_steps(CFG, acts.shape[0])
    assert steps >= 8  # several checkpoints and a second epoch
    whole, report = TRN.train(CFG, acts, tmp_path / "whole")
    assert report["steps"] == steps
    pieces, parts = 0, None
    for _ in range(steps + 2):  # bounded: a resume that loses its place would never finish
        try:
            parts, _ = TRN.train(CFG, acts, tmp_path / "pieces", max_minutes=1e-9)  # stops after one step
            break
        except TRN.PieceDone:
            pieces += 1
    assert parts is not None, f"not finished after {pieces} pieces of a {steps}-step run"
    assert pieces >= steps - 2  # every piece resumed from the previous one's checkpoint
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert float((whole.W_dec - _make_untrained().W_dec).abs().max()) > 1e-3  # it trained
    with pytest.raises(ValueError, match="other settings"):
        TRN.train(replace(CFG, lr=1e-3), acts, tmp_path / "pieces", max_minutes=1e-9)


def _make_untrained():
    return TRN._make_sae(CFG, tiny_engine().model.cfg.d_model)


@pytest.mark.parametrize("normalize", ["expected_average_only_in", "covariance_whitening"])
def test_saved_sae_loads_through_saelens_and_the_project(engine, docs, tmp_path, normalize):
    from sae_lens import SAE

    from unlearn_core.model.saes import load_sae

    out = tmp_path / "sae"
    cfg = replace(CFG, out_dir=str(out), normalize=normalize)
    dev = docs[:10]
    TRN.train_embedded_sae(cfg, cache_dir=str(tmp_path / "cache"), engine=engine, texts=(docs[10:], dev, {"toy": 200}))
    training = json.loads((out / "training.json").read_text())
    assert training["hook_name"] == HOOK and training["steps"] >= 8 and training["cpu"]
    assert training["activation_cache"]["n_activations"] > 0 and training["total_seconds"] > 0
    from safetensors.torch import load_file

    assert all(v.dtype == torch.float16 for v in load_file(str(out / "sae_weights.safetensors")).values())
    a = SAE.load_from_disk(str(out))
    b = load_sae(str(out), model=engine.model)
    assert a.W_enc.dtype == torch.float32 and b.sae.W_enc.dtype == torch.float32  # upcast on load
    assert b.hook_name == HOOK and a.cfg.architecture() == "jumprelu"
    x = AC.load(
        tmp_path
        / "cache"
        / "sae_training"
        / next(p.name for p in (tmp_path / "cache" / "sae_training").iterdir())
        / "acts"
    )[:64].float()
    fa, fb = a.encode(x), b.sae.encode(x)
    torch.testing.assert_close(fa, fb)
    # unit-norm decoder rows (a clamp value means the same for every feature), up to float16 rounding
    torch.testing.assert_close(a.W_dec.norm(dim=1), torch.ones(CFG.d_sae), atol=2e-3, rtol=0)
    # the input scaling is folded into the weights: raw activations in, raw-scale reconstruction out
    assert a.cfg.normalize_activations == "none"
    ratio = float(a.decode(fa).norm(dim=-1).mean() / x.norm(dim=-1).mean())
    assert 0.5 < ratio < 2, ratio
    assert (
        0 < float((fa > 0).float().sum(-1).mean()) < CFG.d_sae
    )  # (a 20-step run: the JumpReLU threshold is still far from k)
    with pytest.raises(ValueError, match="layer 5 is not a layer"):
        TRN.train_embedded_sae(
            replace(cfg, layer=5), cache_dir=str(tmp_path / "cache"), engine=engine, texts=(docs, dev, {})
        )


def test_folding_the_decoder_norm_keeps_the_reconstruction():
    """Against the JumpReLU formula written out: activations scale by the row norms, the
    reconstruction does not change, and the gate opens on the same features."""
    g = torch.Generator().manual_seed(0)
    d, n = 12, 20
    st = {
        "W_enc": torch.randn(d, n, generator=g),
        "b_enc": torch.randn(n, generator=g),
        "W_dec": torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 50,
        "b_dec": torch.randn(d, generator=g),
        "threshold": torch.rand(n, generator=g),
    }
    x = torch.randn(64, d, generator=g) * 3

    def run(s):
        pre = (x - s["b_dec"]) @ s["W_enc"] + s["b_enc"]
        f = pre * (pre > s["threshold"])
        return f, f @ s["W_dec"] + s["b_dec"]

    f0, r0 = run(st)
    folded = TRN.fold_decoder_norm(st)
    f1, r1 = run(folded)
    norms = st["W_dec"].norm(dim=1)
    torch.testing.assert_close(folded["W_dec"].norm(dim=1), torch.ones(n))
    torch.testing.assert_close(f1, f0 * norms, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(r1, r0, rtol=1e-4, atol=1e-3)
    assert torch.equal(f1 > 0, f0 > 0) and bool((f0 > 0).any())
