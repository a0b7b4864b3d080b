"""The activation LRU and what is computed from a prompt's cached residuals.

The LRU keeps, per prompt text, the residual stream at every SAE hook point (not the SAE
codes: a 16k-wide code is ~25x the residual), so /api/activations and /api/features/search
on a repeated prompt skip the forward pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from unlearn_core.features.stats import layer_of_hook
from unlearn_core.model.engine import Engine


@dataclass
class PromptActs:
    ids: list[int]
    resid: dict[str, torch.Tensor]  # hook name -> [1, T, d_model]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.resid.values())


class ActivationLRU:
    """A small LRU bounded by entry count and bytes; counts hits and misses for /api/info."""

    def __init__(self, capacity: int = 64, max_bytes: int = 256 << 20):
        self.capacity, self.max_bytes = capacity, max_bytes
        self._d: OrderedDict[tuple, PromptActs] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.bytes = 0

    def get(self, key: tuple) -> PromptActs | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: tuple, value: PromptActs) -> None:
        with self._lock:
            if key in self._d:
                self.bytes -= self._d.pop(key).nbytes
            self._d[key] = value
            self.bytes += value.nbytes
            while self._d and (len(self._d) > self.capacity or self.bytes > self.max_bytes):
                _, old = self._d.popitem(last=False)
                self.bytes -= old.nbytes

    def stats(self) -> dict:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "entries": len(self._d),
                "capacity": self.capacity,
                "bytes": self.bytes,
                "max_bytes": self.max_bytes,
            }


@torch.inference_mode()
def compute_prompt_acts(engine: Engine, text: str) -> PromptActs:
    model = engine.model
    toks = model.to_tokens(text, prepend_bos=True, truncate=False)
    check_length(engine, toks.shape[1])
    hooks = sorted({s.hook_name for s in engine.saes.values()})
    grabbed: dict[str, torch.Tensor] = {}

    def grab(x, hook):
        grabbed[hook.name] = x.detach().clone()

    with model.hooks(fwd_hooks=[(h, grab) for h in hooks]):
        model(toks.to(model.cfg.device), stop_at_layer=max(layer_of_hook(h) for h in hooks))
    return PromptActs(toks[0].tolist(), grabbed)


def check_length(engine: Engine, n_tokens: int, extra: int = 0) -> None:
    n_ctx = engine.model.cfg.n_ctx
    if n_tokens + extra > n_ctx:
        more = f" plus {extra} new tokens" if extra else ""
        raise ValueError(f"text is {n_tokens} tokens{more}, longer than the model's context ({n_ctx} tokens)")


def codes_for(engine: Engine, acts: PromptActs, sae_key: str) -> torch.Tensor:
    """SAE codes [1, T, d_sae], exactly as ``features.encode_tokens`` computes them."""
    loaded = engine.saes[sae_key]
    with torch.inference_mode():
        return loaded.sae.encode(acts.resid[loaded.hook_name].to(loaded.sae.W_enc.dtype))


def token_activations(engine: Engine, acts: PromptActs, sae_key: str, features: list[int], top_k: int) -> dict:
    from unlearn_core.features.stats import token_activations_from_codes

    return token_activations_from_codes(engine, sae_key, acts.ids, codes_for(engine, acts, sae_key)[0], features, top_k)
