"""Generation, loss added and perplexity."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from unlearn_core.server.schemas.common import (
    MAX_EVAL_TOKENS,
    MAX_INTERVENTIONS,
    MAX_NEW_TOKENS,
    InterventionIn,
    InterventionOut,
    InterventionsRequest,
    Name,
    Text,
    Variant,
)


class GenerateRequest(InterventionsRequest):
    prompt: Text
    variant: Variant = Field("base", description="generate with this model variant (the interventions on top)")
    max_new_tokens: int = Field(40, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=5.0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class GenerateResponse(BaseModel):
    prompt: str
    base: str
    intervened: str | None
    interventions: list[InterventionOut]


class CorpusRequest(InterventionsRequest):
    """A metric over a corpus: n_tokens of it, in windows of ctx tokens."""

    n_tokens: int = Field(10_000, ge=16, le=MAX_EVAL_TOKENS)
    ctx: int = Field(256, ge=8, le=4096)
    variant: Variant = Field(
        "base",
        description="run on this model variant in place of the model as loaded: "
        "the clean numbers are the variant's, the interventions apply on top of it",
    )


class LossAddedRequest(CorpusRequest):
    corpus: Name = "webtext"
    interventions: Annotated[list[InterventionIn], Field(min_length=1, max_length=MAX_INTERVENTIONS)]


class LossAddedResponse(BaseModel):
    corpus: str
    clean_loss: float | None
    intervened_loss: float | None
    loss_added: float | None
    n_tokens: int
    interventions: list[InterventionOut]
    variant: str = "base"  # the model variant every number above is on


class PerplexityRequest(CorpusRequest):
    corpus: Name = "wikitext"
    part: Literal["all", "train", "heldout"] = "all"


class Perplexity(BaseModel):
    perplexity: float | None  # None when it overflows
    mean_nll: float | None
    n_tokens: int
    ctx: int


class PerplexityResponse(BaseModel):
    corpus: str
    part: str
    base: Perplexity
    intervened: Perplexity | None
    interventions: list[InterventionOut]
    variant: str = "base"  # the model variant every number above is on
