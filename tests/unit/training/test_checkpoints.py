"""The shared checkpoint format: parameters, Adam's moments and step, and counters round-trip
exactly; a checkpoint of other parameters refuses to half-load."""

import pytest
import torch

from unlearn_core.training import checkpoints as CK


def _trained(seed: int = 0) -> tuple[dict, torch.optim.Optimizer]:
    g = torch.Generator().manual_seed(seed)
    params = {
        "a": torch.randn(4, 3, generator=g, requires_grad=True),
        "b": torch.randn(3, generator=g, requires_grad=True),
    }
    opt = torch.optim.Adam(list(params.values()), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        (params["a"].sum() ** 2 + params["b"].pow(3).sum()).backward()
        opt.step()
    return params, opt


def test_round_trip_restores_parameters_moments_step_and_counters(tmp_path):
    params, opt = _trained()
    meta = {"step": 3, "seconds": 1.25, "history": [{"loss": 0.5}]}
    CK.save(tmp_path / "ck.safetensors", params, opt, meta)
    assert CK.read_meta(tmp_path / "ck.safetensors") == meta
    fresh = {k: torch.zeros_like(v, requires_grad=True) for k, v in params.items()}
    opt2 = torch.optim.Adam(list(fresh.values()), lr=1e-2)
    assert CK.load(tmp_path / "ck.safetensors", fresh, opt2) == meta
    for k in params:
        assert torch.equal(fresh[k], params[k])
        s1, s2 = opt.state[params[k]], opt2.state[fresh[k]]
        assert float(s2["step"]) == float(s1["step"]) == 3
        assert torch.equal(s2["exp_avg"], s1["exp_avg"]) and torch.equal(s2["exp_avg_sq"], s1["exp_avg_sq"])
    # the next step from the restored state is the next step of the original
    for p, o in ((params, opt), (fresh, opt2)):
        o.zero_grad()
        (p["a"].sum() ** 2 + p["b"].pow(3).sum()).backward()
        o.step()
    assert all(torch.equal(fresh[k], params[k]) for k in params)


def test_other_parameters_refuse_to_load(tmp_path):
    params, opt = _trained()
    CK.save(tmp_path / "ck.safetensors", {"a": params["a"]}, opt, {"step": 1})
    with pytest.raises(ValueError, match="lacks parameters"):
        CK.load(tmp_path / "ck.safetensors", {"a": torch.zeros(4, 3), "c": torch.zeros(2)}, None)
