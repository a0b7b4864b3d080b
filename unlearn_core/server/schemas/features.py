"""Tokens, activations and features: dashboards, search and the paper's selection."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from unlearn_core.server.schemas.common import (
    MAX_CORPORA,
    MAX_FEATURES,
    MAX_STATS_TOKENS,
    FeatureId,
    Name,
    Request,
    Text,
    Variant,
)


class TokenizeRequest(Request):
    text: Text


class TokenizeResponse(BaseModel):
    tokens: list[str]
    ids: list[int]
    n_tokens: int
    n_ctx: int


class ActivationsRequest(Request):
    text: Text
    sae: Name | None = None
    features: list[FeatureId] = Field(default_factory=list, max_length=MAX_FEATURES)
    top_k: int = Field(5, ge=1, le=100)
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")


class ActivationsResponse(BaseModel):
    sae: str
    tokens: list[str]
    features: list[int]
    values: list[list[float]]  # [token][feature], BOS row is 0
    top_features: list[list[tuple[int, float]]]  # per token: (feature, value), active only
    cached: bool  # the prompt's activations came from the in-memory LRU
    variant: str = "base"  # the model variant every number above is on


class DashboardRequest(Request):
    sae: Name | None = None
    feature: FeatureId
    corpora: list[Name] = Field(
        default_factory=lambda: ["webtext", "wmdp-bio-text"], min_length=1, max_length=MAX_CORPORA
    )
    n_tokens: int = Field(20_000, ge=16, le=MAX_STATS_TOKENS)
    k: int = Field(8, ge=1, le=50)
    neuronpedia: bool = True
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")


class Example(BaseModel):
    window: int
    tokens: list[str]
    values: list[float]
    max: float
    peak: int


class QuantileBand(BaseModel):
    range: list[float]
    examples: list[Example]


class Examples(BaseModel):
    corpus: str
    top: list[Example]
    quantiles: list[QuantileBand]


class CorpusFeature(BaseModel):
    n_tokens: int
    freq: float
    mean_act: float
    mean_active: float
    max_act: float
    hist: list[float]
    examples: Examples


class LogitEffects(BaseModel):
    top: list[tuple[str, float]]
    bottom: list[tuple[str, float]]


class DashboardResponse(BaseModel):
    sae: str
    feature: int
    corpora: dict[str, CorpusFeature]
    bin_edges: list[float]
    logits: LogitEffects
    description: str
    logit_lens_meaningful: bool = True  # False: the hook is early; the logit lens there is mostly noise
    neuronpedia: dict[str, Any] | None = None
    variant: str = "base"  # the model variant every number above is on


class SearchRequest(Request):
    sae: Name | None = None
    text: Text
    k: int = Field(20, ge=1, le=200)
    background: Name | None = Field(
        "webtext",
        description="the background corpus: specificity compares the text's "
        "activations with the features' firing there; with rank=max it down-weights "
        "ubiquitous features (None: plain max activation)",
    )
    background_tokens: int = Field(20_000, ge=16, le=MAX_STATS_TOKENS)
    rank: Literal["specificity", "max"] = Field(
        "specificity",
        description="specificity: activation relative to the "
        "feature's background peak x log2(1/background frequency); max: the "
        "largest activation on the text",
    )
    dense_last: bool = Field(
        True, description="dense features (active on > 10% of the background's tokens) after all the others"
    )
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")


class SearchHit(BaseModel):
    feature: int
    max_act: float
    n_tokens_active: int
    top_token: str
    score: float
    dense: bool | None = None  # active on > 10% of the background's tokens (None: no background)
    background_freq: float | None = None


class SearchResponse(BaseModel):
    sae: str
    features: list[SearchHit]
    cached: bool
    variant: str = "base"  # the model variant every number above is on


class SelectRequest(Request):
    sae: Name | None = None
    forget: Name = "wmdp-bio-text@train"
    retain: Name = "wikitext@train"
    threshold: float = Field(0.01, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(20, ge=1, le=MAX_FEATURES)
    n_tokens: int = Field(20_000, ge=16, le=MAX_STATS_TOKENS)
    describe: bool = False
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")


class SelectedFeature(BaseModel):
    feature: int
    forget_freq: float
    retain_freq: float
    ratio: float
    description: str | None = None


class SelectResponse(BaseModel):
    sae: str
    forget: str
    retain: str
    threshold: float
    n_tokens: int
    features: list[SelectedFeature]
    variant: str = "base"  # the model variant every number above is on
