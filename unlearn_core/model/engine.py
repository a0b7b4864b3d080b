"""The loaded state every entry point shares: a model, its SAEs and the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from unlearn_core.core import cache as C
from unlearn_core.core.settings import Settings
from unlearn_core.method.interventions import HookState, Intervention, enable_token_hook, hooks_for, special_ids
from unlearn_core.model.saes import LoadedSAE, check_compatible, load_sae


@dataclass
class Engine:
    model: object  # transformer_lens.HookedTransformer
    saes: dict[str, LoadedSAE]
    settings: Settings
    model_name: str = ""
    extra: dict = field(default_factory=dict)
    variant: str = ""  # the model variant whose weights are applied now ("rmu:<name>@<sha>"; rmu.applied)
    _digest_memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def prompt_format(self) -> str:
        return self.settings.resolved_prompt_format()

    @property
    def scoring(self) -> str:
        return self.settings.resolved_scoring()

    @property
    def default_sae(self) -> str:
        return next(iter(self.saes))

    def hooks(self, interventions: list[Intervention] | None, state: HookState | None = None) -> list:
        """The TransformerLens hooks of ``interventions`` (one HookState per call unless given:
        a gated intervention keeps its prompt's decision there for the continuation steps)."""
        state = state or HookState()
        if not state.special_ids:
            state.special_ids = special_ids(self.model.tokenizer)
        return hooks_for(list(interventions or []), self.saes, state)

    def cache_namespace(self) -> str:
        """Identifies the model for disk caches (name + dtype: results differ across dtypes). The
        dtype is the model's own, not the settings': an engine built from parts keeps default settings.
        A model variant applied now (an RMU delta) is part of it."""
        base = f"{self.model_name}|{str(self.model.cfg.dtype).replace('torch.', '')}"
        return f"{base}|{self.variant}" if self.variant else base

    def model_digest(self) -> str:
        """A digest of the weights as they are now (a sample: every 997th value of every parameter,
        with names, shapes and dtypes), so a model whose weights changed behind the same name (a
        local folder rewritten, another hub revision) misses every disk cache. Recomputed only when
        a parameter was replaced or changed in place (torch's version counter)."""
        params = list(self.model.named_parameters())
        stamp = tuple((n, p.data_ptr(), p._version) for n, p in params)
        if self._digest_memo.get("stamp") != stamp:
            self._digest_memo.update(stamp=stamp, digest=C.digest_tensors(params, stride=997))
        return self._digest_memo["digest"]

    def cache_identity(self) -> tuple[str, str]:
        """What every disk cache entry computed with the model is keyed by: its namespace (name,
        dtype, applied variant) and the digest of its weights."""
        return self.cache_namespace(), self.model_digest()

    def info(self) -> dict:
        from unlearn_core.data import loaders as D

        cfg = self.model.cfg
        return {
            "model": self.model_name,
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "d_vocab": cfg.d_vocab,
            "device": str(cfg.device),
            "dtype": str(cfg.dtype).replace("torch.", ""),
            "saes": [s.describe() for s in self.saes.values()],
            "prompt_format": self.prompt_format,
            "scoring": self.scoring,
            "data_sources": D.data_sources(self.settings.data_dir),
        }


def load_engine(settings: Settings, progress: bool = True) -> Engine:
    from unlearn_core.model.models import load_model

    model = load_model(settings.model, settings.device, settings.dtype, settings.cache_dir, progress=progress)
    dev = str(model.cfg.device)
    saes = {}
    for sel in settings.saes:
        loaded = load_sae(sel, device=dev, dtype="float32")
        check_compatible(loaded, model)
        saes[sel] = loaded
    enable_token_hook(model)
    return Engine(model=model, saes=saes, settings=settings, model_name=settings.model)


def engine_from_parts(
    model, saes: list[LoadedSAE], settings: Settings | None = None, model_name: str = "tiny"
) -> Engine:
    """For tests and embedding: wrap an already-built model and SAEs."""
    from unlearn_core.core.settings import load_settings

    settings = settings or load_settings({"model": model_name, "saes": [s.key for s in saes]})
    for s in saes:
        check_compatible(s, model)
    enable_token_hook(model)
    return Engine(model=model, saes={s.key: s for s in saes}, settings=settings, model_name=model_name)
