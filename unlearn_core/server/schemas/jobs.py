"""Evaluation sweeps (jobs): the spec and what the server reports while they run."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from unlearn_core.method.modes import GATED_MODES, MODES
from unlearn_core.server.schemas.common import (
    MAX_CORPORA,
    MAX_EVAL_TOKENS,
    MAX_FEATURES,
    MAX_JOB_CONFIGS,
    MAX_STATS_TOKENS,
    MAX_VALUES,
    Mode,
    Name,
    Request,
    SweepClampValue,
    Variant,
)

TARGET_RULE = (
    "With `target`, every field marked 'from the target' that the request does not give is taken "
    "from that target (explicitly given fields win); the stored spec holds the resolved values."
)


class JobSpec(Request):
    """A sweep over (retain threshold, N, clamp value) with the paper's selection and metrics."""

    target: Name | None = Field(None, description="an unlearning target (GET /api/targets). " + TARGET_RULE)
    sae: Name | None = None
    forget_corpus: Name = Field(
        "wmdp-bio-text@train",
        description="from the target: its forget corpus (or its labelled fallback when that cannot be had)",
    )
    retain_corpus: Name = Field("wikitext@train", description="the single retain corpus when retain_corpora is empty")
    retain_corpora: list[Name] = Field(
        default_factory=list,
        max_length=MAX_CORPORA,
        description="from the target: its retain corpora; a feature's retain "
        "frequency is its highest over them (empty: [retain_corpus])",
    )
    selection_tokens: int = Field(50_000, ge=16, le=MAX_STATS_TOKENS)
    thresholds: list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [0.01], min_length=1, max_length=16
    )
    ns: list[Annotated[int, Field(ge=1, le=MAX_FEATURES)]] = Field(
        default_factory=lambda: [10, 20], min_length=1, max_length=16
    )
    values: list[SweepClampValue] = Field(
        default_factory=lambda: [20.0, 50.0],
        min_length=1,
        max_length=MAX_VALUES,
        description="clamp values c, from 0: the features are set to -c, so a negative c would raise them",
    )
    mode: Mode = "clamp"
    modes: list[Mode] = Field(
        default_factory=list,
        max_length=len(MODES),
        description="several modes over the same configurations and questions (e.g. "
        "clamp and gated, side by side); empty: [mode]",
    )
    gate: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="gated modes: tau")
    gate_percentile: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        allow_inf_nan=False,
        description="gated modes: tau = this percentile of rho over windows of "
        "gate_corpus, calibrated per selection of features",
    )
    gate_corpus: Name | None = Field(None, description="the corpus of gate_percentile (default wikitext@train)")
    forget_set: Name = Field(
        "wmdp-bio",
        description="from the target: its forget questions, held-out part (its eval_part, as `target eval` reports)",
    )
    side_effect_sets: list[Name] = Field(
        default_factory=lambda: ["mmlu:side-effects"],
        max_length=8,
        description="from the target: its retain question sets, held-out part",
    )
    known: bool = True
    strict_known: bool | None = Field(
        None,
        description="from the target (else false): the strict known filter "
        "(also wrong with the question text blanked); only with known",
    )
    question_limit: int = Field(0, ge=0, le=100_000, description="first N questions of each set (0 = all)")
    loss_corpus: Name = Field("webtext", description="from the target: its loss corpus")
    loss_tokens: int = Field(10_000, ge=0, le=MAX_EVAL_TOKENS, description="0 disables loss added")
    delay_per_config: float = Field(
        0.0,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="test hook: seconds to wait after each configuration (--tiny only)",
    )
    variants: list[Variant] = Field(
        default_factory=list,
        max_length=8,
        description="model variants ('rmu:<name>', 'persist:<name>') evaluated as rows of their own "
        "(no clamp) on the same known questions and loss windows",
    )
    model_variant: Variant = Field(
        "base",
        description="the model the clean row and every clamp configuration "
        "run on: 'rmu:<name>' or 'persist:<name>' puts the clamps on top of that fine-tuned model. The known "
        "questions, the feature selection and the clean loss stay the model as "
        "loaded's, so rows compare with a base sweep's",
    )

    @field_validator("thresholds", "ns", "values", "side_effect_sets", "retain_corpora", "modes", "variants")
    @classmethod
    def _unique(cls, v: list) -> list:
        # duplicates would be one config; a field validator (not an assignment in the model
        # validator) keeps model_fields_set equal to what the request gave (the target rule)
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _size(self):
        n = len(self.thresholds) * len(self.ns) * len(self.values) * len(self.modes or [self.mode])
        if n > MAX_JOB_CONFIGS:
            raise ValueError(f"at most {MAX_JOB_CONFIGS} configurations per job, got {n}")
        gated = [m for m in self.modes or [self.mode] if m in GATED_MODES]
        if gated and (self.gate is None) == (self.gate_percentile is None):
            raise ValueError(f"mode(s) {gated} need exactly one of gate (tau) or gate_percentile")
        if not gated and (self.gate is not None or self.gate_percentile is not None or self.gate_corpus):
            raise ValueError(f"gate, gate_percentile and gate_corpus are for the gated modes {GATED_MODES}")
        if self.gate_corpus is not None and self.gate_percentile is None:
            raise ValueError("gate_corpus goes with gate_percentile")
        return self


class JobCreated(BaseModel):
    id: str
    status: str
    total: int


class JobSummary(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "cancelled", "failed", "paused"]
    done: int
    total: int
    rate_per_min: float | None  # configurations per minute in this run's configurations phase (setup excluded)
    eta_s: float | None  # None until that rate is known
    created: float
    started: float | None
    finished: float | None
    error: str | None
    note: str | None
    phase: str | None = None  # running jobs: known filter | questions | feature statistics | loss baseline |
    #                           baseline | configurations
    setup_s: float | None = None  # seconds this run spent before the configurations phase
    stage_done: int | None = None  # running jobs: lock steps (known filter: questions) done in the current
    stage_total: int | None = None  # stage (a setup phase, or one selection's clamp values) of those announced
    stage_eta_s: float | None = None  # seconds left in that stage at its own rate (None before its first step)


class JobResult(BaseModel):
    config: str  # "none" for the clean baseline, "rmu:<name>" for a model variant, else
    # "t=<threshold>|n=<N>|c=<value>" (+ "|<mode>" with several)
    threshold: float | None
    n: int | None
    value: float | None
    mode: str | None  # "rmu" for a model variant's row
    variant: str | None = None  # the model variant of the row (no clamp)
    gate: float | None = None  # gated modes: tau
    gate_open: dict[str, float | None] | None = None  # gated modes: per set, the share of prompts the gate opens on
    features: list[int]
    forget_accuracy: float | None
    side_effect_accuracy: dict[str, float | None]
    side_effect_mean: float | None
    loss_added: float | None
    n_questions: dict[str, int]
    seconds: float
    note: str | None = None


class RayTask(BaseModel):
    """One Ray task of this run (job_backend = "ray"): a selection's clamp values on one question shard."""

    key: list[Any]  # [selection index, set name, shard]
    pid: int  # the worker process
    seconds: float  # its compute time on the worker
    questions: int  # how many it scored
    started: float  # worker wall clock
    ended: float
    submitted: float  # driver wall clock
    received: float


class JobDetail(JobSummary):
    spec: dict[str, Any]
    results: list[JobResult]
    tasks: list[RayTask] = []  # empty for local jobs


class JobList(BaseModel):
    jobs: list[JobSummary]
