"""Model and SAE loading: offline errors say what to do; local SAE folders load with their hook."""

import pytest

from unlearn_core.model.models import ModelUnavailableError, load_model, pick_device, pick_dtype
from unlearn_core.model.saes import SAEUnavailableError, load_sae, parse_selector


@pytest.fixture()
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE as a node without internet has it: set before the hub libraries read it at
    import (they keep the value), so no request waits out its network timeouts here (20 s each)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_model_offline_gives_clear_error(hub_offline):
    with pytest.raises(ModelUnavailableError, match="embedded"):
        load_model("google/gemma-2-2b-it", progress=False)


def test_hub_sae_offline_gives_clear_error(hub_offline):
    with pytest.raises(SAEUnavailableError, match="local SAELens folder"):
        load_sae("gemma-scope-2b-pt-res-canonical:layer_7/width_16k/canonical")


def test_device_and_dtype_choice():
    assert pick_device("auto") in ("cpu", "cuda")
    assert pick_dtype("auto", "cpu") == "float32" and pick_dtype("auto", "cuda") == "bfloat16"
    assert pick_dtype("float16", "cpu") == "float16"


def test_local_sae_folder_roundtrip_keeps_hook(tmp_path, tiny):
    sae = tiny.saes["tiny"].sae
    sae.save_model(str(tmp_path / "s"))
    loaded = load_sae(str(tmp_path / "s"), model=tiny.model)
    assert loaded.hook_name == "blocks.0.hook_resid_post" and loaded.d_sae == 64
    with pytest.raises(SAEUnavailableError, match="cfg.json"):
        load_sae(str(tmp_path / "missing"))
    (tmp_path / "s" / "sae_weights.safetensors").unlink()
    with pytest.raises(SAEUnavailableError, match="safetensors"):
        load_sae(str(tmp_path / "s"))


def test_selector_parsing():
    assert parse_selector("rel:layer_7/width_16k/canonical") == ("rel", "layer_7/width_16k/canonical")
    with pytest.raises(ValueError):
        parse_selector("nonsense")


def test_sae_with_wrong_hook_is_refused(tmp_path, tiny):
    from unlearn_core.model.saes import check_compatible
    from unlearn_core.model.tiny import tiny_sae

    bad = tiny_sae(hook_name="blocks.9.hook_resid_post")
    with pytest.raises(SAEUnavailableError, match="does not have"):
        check_compatible(bad, tiny.model)


def test_a_failed_weight_cache_save_is_logged_not_raised(tmp_path, tiny, monkeypatch, caplog):
    """A full disk while saving the TransformerLens weights (CI once ran out) must not fail the load."""
    import safetensors.torch

    from unlearn_core.model import models as MODELS

    def full_disk(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")  # a partial file, as a failed write leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    path = tmp_path / MODELS.HOOKED_WEIGHTS
    with caplog.at_level("WARNING"):
        MODELS._save_hooked_weights(tiny.model, path)
    assert list(tmp_path.iterdir()) == [] and "No space left on device" in caplog.text
    monkeypatch.undo()
    MODELS._save_hooked_weights(tiny.model, path)  # and a working disk still gets the file
    assert path.exists() and list(tmp_path.iterdir()) == [path]
