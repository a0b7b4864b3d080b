"""A tiny model, tokenizer and SAE built from configs: for unit tests and the tiny server backend.

No downloads: the tokenizer is character-level (built with `tokenizers`), the model is a
seeded random 2-layer HookedTransformer, and the SAE a seeded JumpReLU SAE built with
``SAE.from_dict``. Feature 0 never fires and feature 1 always fires, so tests can rely on both.
"""

from __future__ import annotations

import string

import torch

TINY_HOOK = "blocks.0.hook_resid_post"
NEVER_FIRES = 0
ALWAYS_FIRES = 1


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = list(dict.fromkeys(string.printable))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.padding_side = "right"
    # TransformerLens re-loads the tokenizer from `name_or_path`, so it must live in a folder.
    import tempfile

    from transformers import AutoTokenizer

    folder = tempfile.mkdtemp(prefix="tiny_tokenizer_")
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_config(n_layers: int = 2, d_model: int = 32, seed: int = 0, **over) -> dict:
    """The tiny model's ``HookedTransformerConfig`` fields (heads of 8, RMS, rotary, gelu MLP 4x):
    tests build their variants from it (``over`` replaces any field)."""
    shape = dict(n_layers=n_layers, d_model=d_model, n_ctx=512, d_head=8, n_heads=d_model // 8, d_mlp=4 * d_model)
    kind = dict(act_fn="gelu", normalization_type="RMS", positional_embedding_type="rotary")
    return {**shape, **kind, "seed": seed, "device": "cpu", **over}


def tiny_model(seed: int = 0, n_layers: int = 2, d_model: int = 32):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok = tiny_tokenizer()
    bos = dict(default_prepend_bos=True, tokenizer_prepends_bos=False)
    cfg = HookedTransformerConfig(**tiny_config(n_layers, d_model, seed, d_vocab=len(tok), **bos))
    model = HookedTransformer(cfg, tokenizer=tok)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    return model


def tiny_sae(d_in: int = 32, d_sae: int = 64, seed: int = 1, hook_name: str = TINY_HOOK, key: str = "tiny"):
    from sae_lens import SAE

    from unlearn_core.model.saes import LoadedSAE

    sae = SAE.from_dict(
        {
            "architecture": "jumprelu",
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": False,
            "normalize_activations": "none",
            "metadata": {"model_name": "tiny", "hook_name": hook_name},
        }
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.05)
        sae.threshold.copy_(torch.full((d_sae,), 0.05))
        sae.b_enc[NEVER_FIRES] = -1e4
        sae.W_enc[:, NEVER_FIRES] = 0.0
        sae.b_enc[ALWAYS_FIRES] = 1.0
        sae.W_enc[:, ALWAYS_FIRES] = 0.0
    sae.eval()
    return LoadedSAE(key, sae, hook_name, d_sae, d_in, source="tiny")


def tiny_engine(seed: int = 0, cache_dir: str | None = None):
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import engine_from_parts

    model = tiny_model(seed)
    sae = tiny_sae(model.cfg.d_model)
    overrides = {"model": "tiny", "saes": ["tiny"], "prompt_format": "plain", "scoring": "letter"}
    if cache_dir:
        overrides["cache_dir"] = cache_dir
    engine = engine_from_parts(model, [sae], load_settings(overrides), model_name="tiny")
    # a random SAE's features fire on most tokens of any text, so no feature would pass a target's
    # retain threshold; the tiny backend relaxes it (and targets.select_for_target says so)
    engine.extra["selection_threshold"] = 1.0
    return engine
