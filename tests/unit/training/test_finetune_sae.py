"""The KL decoder fine-tune: it lowers the spliced model's KL on its own text, leaves the encoder
(which features fire) untouched, resumes exactly from a checkpoint, and the folded state
reconstructs like the tuned SAE; its tail forward is the model's own."""

import copy
import json

import pytest
import torch

from unlearn_core.model.tiny import tiny_engine
from unlearn_core.training import checkpoints as CK
from unlearn_core.training.finetune_sae import (
    CHECKPOINT,
    KLFinetuneConfig,
    PieceDone,
    finetune_and_save,
    folded_state,
    kl_finetune,
    tail_logits,
    training_windows,
)

DOCS = ["the cat sat on the mat and the dog ran to the park " * 4, "a bird flew over the old red barn " * 5] * 8
CFG = KLFinetuneConfig(n_tokens=2000, ctx=32, batch_size=4, lr=3e-3, pos_fraction=0.5)


def test_tail_logits_match_the_model():
    eng = tiny_engine()
    m = eng.model
    toks = torch.randint(1, m.cfg.d_vocab, (2, 12))
    resid = m(toks, stop_at_layer=1)
    pos = torch.rand(2, 12) < 0.5
    assert torch.allclose(tail_logits(m, resid, 1, pos), m(resid, start_at_layer=1)[pos], atol=1e-5)


def test_kl_finetune_lowers_kl_and_keeps_encoder():
    eng = tiny_engine()
    key = eng.default_sae
    sae = eng.saes[key].sae
    enc = sae.W_enc.detach().clone()
    dec = sae.W_dec.detach().clone()
    rep = kl_finetune(eng, key, DOCS, CFG)
    rep2 = kl_finetune(eng, key, DOCS, CFG)
    assert rep["steps"] > 3
    assert rep2["kl_last10"] < rep["kl_first10"]
    assert torch.equal(sae.W_enc, enc)
    assert not torch.equal(sae.W_dec, dec)
    state = folded_state(sae)
    assert torch.allclose(state["W_dec"].norm(dim=1), torch.ones(state["W_dec"].shape[0]), atol=1e-5)
    x = torch.randn(5, sae.W_enc.shape[0]) * 3
    f = copy.deepcopy(sae)
    f.load_state_dict(state)
    assert torch.allclose(f.decode(f.encode(x)), sae.decode(sae.encode(x)), atol=1e-4)


def test_a_run_in_pieces_equals_one_run(tmp_path):
    """Stopped after its first step (max_minutes=0 stops at the first checkpoint chance) and resumed
    twice, the decoder ends where an uninterrupted run ends."""
    whole = tiny_engine()
    key = whole.default_sae
    kl_finetune(whole, key, DOCS, CFG)
    pieces = tiny_engine()
    with pytest.raises(PieceDone):
        kl_finetune(pieces, key, DOCS, CFG, tmp_path / "ck", max_minutes=0)
    step = CK.read_meta(tmp_path / "ck" / CHECKPOINT)["step"]
    assert step == 1
    fresh = tiny_engine()  # a new process: the checkpoint is all it has
    rep = kl_finetune(fresh, key, DOCS, CFG, tmp_path / "ck")
    assert len(rep["kl_per_step"]) == rep["steps"]
    assert torch.allclose(fresh.saes[key].sae.W_dec, whole.saes[key].sae.W_dec, atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        kl_finetune(tiny_engine(), key, DOCS, KLFinetuneConfig(n_tokens=999, ctx=32), tmp_path / "ck")


def test_finetune_and_save_writes_a_loadable_folder(tmp_path):
    from unlearn_core.model.saes import load_sae

    eng = tiny_engine(cache_dir=str(tmp_path / "cache"))
    src = tmp_path / "src"
    eng.saes[eng.default_sae].sae.save_model(str(src))
    (src / "training.json").write_text(json.dumps({"total_seconds": 10.0}))
    eng2 = tiny_engine(cache_dir=str(tmp_path / "cache"))
    loaded = load_sae(str(src), model=eng2.model)
    eng2.saes = {"src": loaded}
    out = finetune_and_save(eng2, "src", CFG, tmp_path / "out", docs=DOCS)
    tr = json.loads((out / "training.json").read_text())
    assert len(tr["kl_finetune"]) == 1 and tr["kl_finetune"][0]["steps"] > 3 and tr["total_seconds"] > 10.0
    back = load_sae(str(out))
    assert back.hook_name == loaded.hook_name
    x = torch.randn(6, loaded.d_in) * 3
    before = load_sae(str(src)).sae
    assert not torch.allclose(back.sae.decode(back.sae.encode(x)), before.decode(before.encode(x)), atol=1e-4)
    assert torch.allclose(back.sae.decode(back.sae.encode(x)), loaded.sae.decode(loaded.sae.encode(x)), atol=1e-4)
    with pytest.raises(ValueError, match="differ"):
        finetune_and_save(eng2, "src", CFG, src, docs=DOCS)
    eng3 = tiny_engine(cache_dir=str(tmp_path / "cache"))
    eng3.saes = {"out": load_sae(str(out), model=eng3.model)}
    further = finetune_and_save(
        eng3, "out", KLFinetuneConfig(**{**CFG.__dict__, "offset_tokens": 500}), tmp_path / "out2", docs=DOCS
    )
    tr2 = json.loads((further / "training.json").read_text())
    assert [p["config"]["offset_tokens"] for p in tr2["kl_finetune"]] == [0, 500]
    assert tr2["total_seconds"] == pytest.approx(tr["total_seconds"] + tr2["kl_finetune"][1]["seconds"], abs=0.2)


def test_a_further_pass_starts_where_the_last_one_ended():
    m = tiny_engine().model
    first = training_windows(m, DOCS, KLFinetuneConfig(n_tokens=310, ctx=32))
    both = training_windows(m, DOCS, KLFinetuneConfig(n_tokens=620, ctx=32))
    second = training_windows(m, DOCS, KLFinetuneConfig(n_tokens=310, ctx=32, offset_tokens=310))
    assert sum(len(w) - 1 for w in first) == 310 and len(first) == 10
    assert second == both[len(first) :] and second and second[0] not in first


@pytest.mark.parametrize(
    "bad",
    [
        {"pos_fraction": 0.0},
        {"pos_fraction": 1.5},
        {"lr": 0.0},
        {"n_tokens": 0},
        {"batch_size": 0},
        {"offset_tokens": -1},
    ],
)
def test_bad_settings_are_clear_errors(bad):
    eng = tiny_engine()
    with pytest.raises(ValueError):
        kl_finetune(eng, eng.default_sae, DOCS, KLFinetuneConfig(**{**CFG.__dict__, **bad}))
    with pytest.raises(ValueError, match="max_minutes"):
        kl_finetune(eng, eng.default_sae, DOCS, CFG, max_minutes=-1)
