"""Loading SAEs: the embedded one, any local SAELens folder, or any SAELens release + id.

The hook point always comes from the SAE's own metadata (``cfg.metadata.hook_name``), and is
checked against the model, so an SAE can never be attached to a point it was not trained on.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_core.core.paths import ASSETS

EMBEDDED_SAE_DIR = ASSETS / "embedded_sae"  # the shipped SAE (train_sae)


_PATCH_LOCK = threading.Lock()


class SAEUnavailableError(RuntimeError):
    """The SAE cannot be loaded here; the message says what to do."""


@dataclass
class LoadedSAE:
    key: str  # the selector the user gave ("embedded", a path, or "release:id")
    sae: "object"  # sae_lens.SAE
    hook_name: str
    d_sae: int
    d_in: int
    source: str
    release: str | None = None
    sae_id: str | None = None
    neuronpedia_id: str | None = None

    @property
    def layer(self) -> int | None:
        parts = self.hook_name.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None

    def describe(self) -> dict:
        return {
            "key": self.key,
            "hook_name": self.hook_name,
            "layer": self.layer,
            "d_sae": self.d_sae,
            "d_in": self.d_in,
            "source": self.source,
            "release": self.release,
            "sae_id": self.sae_id,
            "neuronpedia_id": self.neuronpedia_id,
            "architecture": self.sae.cfg.architecture(),
        }


def parse_selector(selector: str) -> tuple[str, str | None]:
    """'embedded' -> (dir, None); a folder -> (folder, None); 'release:id' -> (release, id)."""
    if selector == "embedded":
        return str(EMBEDDED_SAE_DIR), None
    if Path(selector).is_dir() or selector.startswith(("/", "./", "../", "~")):
        return str(Path(selector).expanduser()), None
    if ":" in selector:
        release, sae_id = selector.split(":", 1)
        return release, sae_id
    raise ValueError(
        f"SAE selector {selector!r} is neither 'embedded', an existing folder, nor 'release:sae_id' "
        "(e.g. 'gemma-scope-2b-pt-res-canonical:layer_7/width_16k/canonical')"
    )


def neuronpedia_id_for(release: str, sae_id: str) -> str | None:
    """Neuronpedia's id for a SAELens release/id, from SAELens's own registry."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        rel = get_pretrained_saes_directory().get(release)
        return (rel.neuronpedia_id or {}).get(sae_id) if rel else None
    except Exception:  # noqa: BLE001 - registry trouble must not block loading
        return None


def _cached_safetensors_shapes(repo_id: str, filename: str) -> dict[str, list[int]] | None:
    """Tensor shapes from the header of a safetensors file already in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache
    from safetensors import safe_open

    path = try_to_load_from_cache(repo_id, filename)
    if not isinstance(path, str):
        return None
    with safe_open(path, framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


@contextmanager
def _shapes_from_local_cache():
    """SAELens's Gemma Scope 2 loader reads tensor shapes with raw HTTP range requests, which
    ignore the hub cache and ``HF_HUB_OFFLINE``: an SAE already downloaded could not be loaded
    offline (a GPU node without internet). Serve the shapes from the cached file when it is
    there; offline and not cached, say so at once; otherwise SAELens's own request runs."""
    from sae_lens.loading import pretrained_sae_loaders as loaders

    original = loaders.get_safetensors_tensor_shapes

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        from huggingface_hub import constants
        from huggingface_hub.errors import OfflineModeIsEnabled

        local = _cached_safetensors_shapes(repo_id, filename)
        if local is not None:
            return local
        if constants.HF_HUB_OFFLINE:  # SAELens's request ignores it: a firewalled node would wait
            raise OfflineModeIsEnabled(f"{repo_id}/{filename} is not in the hub cache and HF_HUB_OFFLINE is set")
        return original(repo_id, filename)

    with _PATCH_LOCK:
        loaders.get_safetensors_tensor_shapes = shapes
        try:
            yield
        finally:
            loaders.get_safetensors_tensor_shapes = original


def load_sae(selector: str, device: str = "cpu", dtype: str = "float32", model=None) -> LoadedSAE:
    from sae_lens import SAE

    a, b = parse_selector(selector)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if b is None:
            folder = Path(a)
            if not (folder / "cfg.json").exists():
                hint = " (run `python -m unlearn_core train-sae` to rebuild it)" if selector == "embedded" else ""
                raise SAEUnavailableError(f"no SAELens folder at {folder}: cfg.json missing{hint}")
            if not (folder / "sae_weights.safetensors").exists():
                raise SAEUnavailableError(f"{folder} has no sae_weights.safetensors (only safetensors are loaded)")
            sae = SAE.load_from_disk(str(folder), device=device, dtype=dtype)
            loaded = LoadedSAE(selector, sae, "", sae.cfg.d_sae, sae.cfg.d_in, source=str(folder))
        else:
            try:
                with _shapes_from_local_cache():
                    sae = SAE.from_pretrained(a, b, device=device, dtype=dtype)
            except Exception as e:  # noqa: BLE001
                raise SAEUnavailableError(
                    f"could not load SAE {a!r} / {b!r} from SAELens's registry ({type(e).__name__}: "
                    f"{str(e)[:200]}). The release/id must exist in SAELens's pretrained_saes.yaml and the "
                    "Hugging Face hub must be reachable; offline, use 'embedded' or a local SAELens folder."
                ) from e
            loaded = LoadedSAE(
                selector,
                sae,
                "",
                sae.cfg.d_sae,
                sae.cfg.d_in,
                source=f"sae_lens:{a}",
                release=a,
                sae_id=b,
                neuronpedia_id=neuronpedia_id_for(a, b),
            )
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    if not hook:
        raise SAEUnavailableError(f"SAE {selector!r} has no hook_name in its metadata; cannot attach it safely")
    loaded.hook_name = hook
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    if model is not None:
        check_compatible(loaded, model)
    return loaded


def check_compatible(loaded: LoadedSAE, model) -> None:
    if loaded.hook_name not in model.hook_dict:
        raise SAEUnavailableError(f"SAE {loaded.key!r} hooks {loaded.hook_name!r}, which the model does not have")
    if loaded.d_in != model.cfg.d_model and "resid" in loaded.hook_name:
        raise SAEUnavailableError(
            f"SAE {loaded.key!r} expects d_in={loaded.d_in} but the model's residual width is {model.cfg.d_model}"
        )


@torch.inference_mode()
def encode(loaded: LoadedSAE, acts: torch.Tensor) -> torch.Tensor:
    return loaded.sae.encode(acts.to(loaded.sae.W_enc.dtype))
