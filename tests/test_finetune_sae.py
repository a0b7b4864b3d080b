"""The KL decoder fine-tune: it lowers the spliced model's KL on its own text, leaves the encoder
(which features fire) untouched, and the folded state reconstructs like the tuned SAE."""
import torch

from unlearn_core.finetune_sae import folded_state, kl_finetune
from unlearn_core.tiny import tiny_engine

DOCS = ["the cat sat on the mat and the dog ran to the park " * 4, "a bird flew over the old red barn " * 5] * 8


def test_kl_finetune_lowers_kl_and_keeps_encoder(tmp_path):
    eng = tiny_engine(cache_dir=str(tmp_path))
    key = eng.default_sae
    sae = eng.saes[key].sae
    enc = sae.W_enc.detach().clone()
    dec = sae.W_dec.detach().clone()
    rep = kl_finetune(eng, key, DOCS, n_tokens=2000, ctx=32, batch_size=4, lr=3e-3)
    rep2 = kl_finetune(eng, key, DOCS, n_tokens=2000, ctx=32, batch_size=4, lr=3e-3)
    assert rep["steps"] > 3
    assert rep2["kl_last10"] < rep["kl_first"]
    assert torch.equal(sae.W_enc, enc)
    assert not torch.equal(sae.W_dec, dec)
    state = folded_state(sae)
    assert torch.allclose(state["W_dec"].norm(dim=1), torch.ones(state["W_dec"].shape[0]), atol=1e-5)
    x = torch.randn(5, sae.W_enc.shape[0]) * 3
    import copy
    f = copy.deepcopy(sae)
    f.load_state_dict(state)
    assert torch.allclose(f.decode(f.encode(x)), sae.decode(sae.encode(x)), atol=1e-4)
