"""Health and info: what the server runs and how busy its model lock is."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from unlearn_core.server.schemas.common import Limits


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "error"]
    detail: str = ""
    auth_required: bool
    uptime_s: float


class CacheStats(BaseModel):
    hits: int
    misses: int
    entries: int
    capacity: int
    bytes: int
    max_bytes: int


class LockLabelStats(BaseModel):
    n: int
    max_hold_s: float
    p95_hold_s: float  # over the last holds kept
    last_hold_s: float


class LockStats(BaseModel):
    """How long the model lock was held (outermost holds since the server started; percentiles
    over the last 512), and how long HTTP requests waited for it. Labels name what held it
    ("perplexity", "mcq", "background: configurations" for a job's step, ...)."""

    n: int
    max_hold_s: float
    p95_hold_s: float
    longest: tuple[str, float] | None  # (label, seconds) of the longest hold
    max_wait_s: float
    p95_wait_s: float
    by_label: dict[str, LockLabelStats] = Field(default_factory=dict)


class QuestionSetInfo(BaseModel):
    name: str
    description: str


class InfoResponse(BaseModel):
    status: Literal["ok", "loading", "error"]
    detail: str = ""
    model: str | None = None
    n_layers: int | None = None
    d_model: int | None = None
    d_vocab: int | None = None
    n_ctx: int | None = None
    device: str | None = None
    dtype: str | None = None
    saes: list[dict[str, Any]] = Field(default_factory=list)
    prompt_format: str | None = None
    scoring: str | None = None
    data_sources: dict[str, str] = Field(default_factory=dict)
    limits: Limits
    modes: list[str]
    question_sets: list[QuestionSetInfo] = Field(default_factory=list)
    corpora: list[str] = Field(default_factory=list)
    activation_cache: CacheStats
    jobs: dict[str, int] = Field(default_factory=dict)
    lock_stats: LockStats | None = None
