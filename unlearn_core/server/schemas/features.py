"""Tokens, activations and features: dashboards, search and the paper's selection."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

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
    context: bool = Field(
        True,
        description="read a short text (a word or a name, up to 16 tokens) inside neutral carrier sentences, "
        "its activations averaged over them: alone, a word is its sub-tokens (features.text_search.CARRIERS)",
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
    in_context: bool = False  # the text was read inside the carrier sentences
    variant: str = "base"  # the model variant every number above is on


SelectionMethod = Literal["frequency", "search", "attribution", "fisher"]


class SelectRequest(Request):
    sae: Name | None = None
    forget: Name = "wmdp-bio-text@train"
    retain: Name = "wikitext@train"
    threshold: float = Field(0.01, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(20, ge=1, le=MAX_FEATURES)
    n_tokens: int = Field(20_000, ge=16, le=MAX_STATS_TOKENS)
    describe: bool = False
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")
    method: SelectionMethod = Field(
        "frequency",
        description="frequency: the paper's (forget vs retain corpus); search, attribution (activation x gradient "
        "of the correct answer's log-probability, forget minus retain questions) and fisher (Dynamic SAE "
        "Guardrails' selection) need a target",
    )
    target: Name | None = Field(
        None,
        description="select for this target instead of forget/retain: its corpora (and n_tokens), its "
        "search query, or the train half of its known questions; threshold applies to the frequency method only",
    )

    @model_validator(mode="after")
    def _needs_target(self):
        if self.method != "frequency" and not self.target:
            raise ValueError(f"method {self.method!r} ranks features by a target's questions or query: name a target")
        return self


class SelectedFeature(BaseModel):
    feature: int
    forget_freq: float
    retain_freq: float
    ratio: float
    description: str | None = None
    score: float | None = None  # search: specificity; attribution / fisher: the ranking score
    forget_score: float | None = None  # attribution / fisher: the forget side's value (see the method)
    retain_score: float | None = None
    forget_question_freq: float | None = None  # fraction of the known forget questions it fires on
    retain_question_freq: float | None = None


class SelectResponse(BaseModel):
    sae: str
    forget: str  # the forget corpus (with a target: the one its frequency columns are on)
    retain: str  # the retain corpus (with a target: its retain corpora, comma-separated)
    threshold: float | None  # None for a search or question-based selection
    n_tokens: int
    features: list[SelectedFeature]
    variant: str = "base"  # the model variant every number above is on
    method: str = "frequency"
    target: str | None = None
    forget_questions: str | None = None  # attribution / fisher: the train-half sets read
    retain_questions: list[str] | None = None
    n_forget_questions: int | None = None  # ... and how many known questions of each
    n_retain_questions: int | None = None
