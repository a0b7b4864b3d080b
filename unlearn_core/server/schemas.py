"""Request and response schemas of the server (pydantic), with the server's input limits.

Every limit lives here so that validation (422) happens before the model is touched, and so
``/api/info`` can tell clients exactly what the server accepts. Requests forbid unknown
fields, so a typo in a field name is an error instead of a silently ignored option.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from unlearn_core.evaluation.demo import MAX_SCAN as DEMO_MAX_SCAN  # questions the guided demo checks per set by default
from unlearn_core.method.interventions import GATED_MODES, MAX_ABS_CLAMP, MODES
from unlearn_core.features.targets import DEFAULT_TARGET, MAX_SAVED_QUESTIONS, MAX_SAVED_TEXT, NAME_RE

MAX_TEXT_CHARS = 20_000
MAX_FEATURES = 512  # total feature ids in one call (over all interventions)
MAX_VALUES = 64  # clamp values in one /api/mcq call
MAX_INTERVENTIONS = 8
MAX_CORPORA = 4
MAX_STATS_TOKENS = 200_000  # feature statistics (dashboard, select, search background)
MAX_EVAL_TOKENS = 100_000  # loss added, perplexity
MAX_PAGE = 2_000  # questions per /api/questions page
MAX_JOB_CONFIGS = 2_000
MAX_NEW_TOKENS = 512

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=300)]
FeatureId = Annotated[int, Field(ge=0)]
ClampValue = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_CLAMP, le=MAX_ABS_CLAMP)]
Variant = Annotated[str, Field(pattern=r"^(base|rmu:[A-Za-z0-9_.-]{1,64})$", description="the model variant: "
                                "'base' (the model as loaded) or 'rmu:<name>' (a finished RMU run's weight delta)")]
Mode = Literal[MODES]  # type: ignore[valid-type]
StaticMode = Literal[tuple(m for m in MODES if m not in GATED_MODES)]  # type: ignore[valid-type]  # no gate to give


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- shared pieces


class InterventionIn(Request):
    """One intervention; ``sae`` defaults to the server's first SAE. The gated modes take exactly
    one of ``gate`` (tau) or ``gate_percentile`` (tau calibrated on ``gate_corpus``, cached)."""

    sae: Name | None = None
    features: list[FeatureId] = Field(default_factory=list, max_length=MAX_FEATURES)
    value: ClampValue = 20.0
    mode: Mode = "clamp"
    gate: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                               description="gated modes: tau; the gate opens when rho > tau")
    gate_percentile: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False,
                                          description="gated modes: tau = this percentile of rho over windows "
                                                      "of gate_corpus (DSG uses 95)")
    gate_corpus: Name | None = Field(None, description="the retain corpus a percentile is taken on "
                                                       "(default wikitext@train)")

    @model_validator(mode="after")
    def _gate(self):
        if self.mode in GATED_MODES:
            if (self.gate is None) == (self.gate_percentile is None):
                raise ValueError(f"mode {self.mode!r} needs exactly one of gate (tau) or gate_percentile")
            if self.gate_corpus is not None and self.gate_percentile is None:
                raise ValueError("gate_corpus goes with gate_percentile")
        elif self.gate is not None or self.gate_percentile is not None or self.gate_corpus is not None:
            raise ValueError(f"gate, gate_percentile and gate_corpus are for the gated modes {GATED_MODES}, "
                             f"not {self.mode!r}")
        return self


class InterventionOut(BaseModel):
    sae: str
    features: list[int]
    value: float
    mode: str
    label: str
    gate: float | None = None  # tau (gated modes), as given or calibrated
    gate_percentile: float | None = None
    gate_corpus: str | None = None


class GateOut(BaseModel):
    """A gated intervention's decision on the scored prompt (the question; cloze: its prefix)."""

    intervention: int  # its index in the request
    rho: float  # fraction of the prompt's counted tokens where a selected feature fires
    tau: float
    open: bool  # rho > tau: the clamp applies
    p_correct_clean: float
    p_correct_open: float  # the probability of the right answer were the gate open (the ungated clamp)


Interventions = Annotated[list[InterventionIn], Field(max_length=MAX_INTERVENTIONS)]


def _check_total_features(ivs: list[InterventionIn]) -> None:
    total = sum(len(iv.features) for iv in ivs)
    if total > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} features in one call, got {total}")


class InterventionsRequest(Request):
    """A request carrying interventions: their features together stay within MAX_FEATURES."""

    interventions: Interventions = Field(default_factory=list)

    @model_validator(mode="after")
    def _total(self):
        _check_total_features(self.interventions)
        return self


class Limits(BaseModel):
    max_text_chars: int = MAX_TEXT_CHARS
    max_features: int = MAX_FEATURES
    max_values: int = MAX_VALUES
    max_interventions: int = MAX_INTERVENTIONS
    max_abs_clamp: float = MAX_ABS_CLAMP
    max_corpora: int = MAX_CORPORA
    max_stats_tokens: int = MAX_STATS_TOKENS
    max_eval_tokens: int = MAX_EVAL_TOKENS
    max_page: int = MAX_PAGE
    max_job_configs: int = MAX_JOB_CONFIGS
    max_new_tokens: int = MAX_NEW_TOKENS
    max_target_text_chars: int = MAX_SAVED_TEXT  # a target defined in the app: its forget corpus
    max_target_questions: int = MAX_SAVED_QUESTIONS  # ... and its questions


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------- health / info


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


# ---------------------------------------------------------------- text, activations, features


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
    corpora: list[Name] = Field(default_factory=lambda: ["webtext", "wmdp-bio-text"], min_length=1,
                                max_length=MAX_CORPORA)
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
    background: Name | None = Field("webtext", description="the background corpus: specificity compares the text's "
                                    "activations with the features' firing there; with rank=max it down-weights "
                                    "ubiquitous features (None: plain max activation)")
    background_tokens: int = Field(20_000, ge=16, le=MAX_STATS_TOKENS)
    rank: Literal["specificity", "max"] = Field("specificity", description="specificity: activation relative to the "
                                                "feature's background peak x log2(1/background frequency); max: the "
                                                "largest activation on the text")
    dense_last: bool = Field(True, description="dense features (active on > 10% of the background's tokens) "
                                               "after all the others")
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


# ---------------------------------------------------------------- questions, MCQ


class QuestionOut(BaseModel):
    id: str
    question: str
    choices: list[str]
    answer: int
    subject: str
    source: str
    extra: dict[str, Any] | None = None  # a question file's own fields (kind, topic, overlaps_bio, ...)


class QuestionsResponse(BaseModel):
    set: str
    label: str
    is_fallback: bool
    origin: str
    total: int  # questions in the whole set
    offset: int
    limit: int
    known: bool  # the known filter was applied to questions[offset:offset+limit]
    strict: bool = False  # ... in its strict form (also wrong with the question text blanked)
    n_skipped_too_long: int  # with known=true: prompts longer than the model's context
    questions: list[QuestionOut]


class InlineQuestion(Request):
    question: Text
    choices: list[Annotated[str, Field(min_length=1, max_length=2_000)]] = Field(min_length=4, max_length=4)
    answer: int = Field(ge=0, le=3)
    subject: Name = "biology"


class MCQRequest(InterventionsRequest):
    question_id: Name | None = None
    question: InlineQuestion | None = None
    set: Name = "wmdp-bio"
    values: list[ClampValue] | None = Field(None, min_length=1, max_length=MAX_VALUES)
    variant: Variant = Field("base", description="score on this model variant (base and the interventions both: "
                             "the interventions apply on top of it)")

    @model_validator(mode="after")
    def _one_question(self):
        if (self.question_id is None) == (self.question is None):
            raise ValueError("give exactly one of question_id or question")
        if self.values is not None and not self.interventions:
            raise ValueError("values (clamp values) need at least one intervention")
        return self


class MCQScoreOut(BaseModel):
    probs: list[float]
    mass: float
    predicted: int
    correct: bool
    scoring: str
    loglik: list[float] | None = None


class CurvePoint(BaseModel):
    value: float | None  # None: the interventions' own values
    score: MCQScoreOut


class MCQResponse(BaseModel):
    question: QuestionOut
    set: str
    set_label: str
    scoring: str
    prompt_format: str
    prompts: list[str] = []  # the scored texts without BOS (mcq.scored_texts): one for letters, four for cloze
    base: MCQScoreOut
    interventions: list[InterventionOut]
    curve: list[CurvePoint]
    gates: list[GateOut] = []  # one per gated intervention (without values: at the interventions' own c)
    variant: str = "base"  # the model variant every score above is on


# ---------------------------------------------------------------- generation, loss, perplexity


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
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded: "
                             "the clean numbers are the variant's, the interventions apply on top of it")


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


# ---------------------------------------------------------------- jobs


TARGET_RULE = ("With `target`, every field marked 'from the target' that the request does not give is taken "
               "from that target (explicitly given fields win); the stored spec holds the resolved values.")


class JobSpec(Request):
    """A sweep over (retain threshold, N, clamp value) with the paper's selection and metrics."""

    target: Name | None = Field(None, description="an unlearning target (GET /api/targets). " + TARGET_RULE)
    sae: Name | None = None
    forget_corpus: Name = Field("wmdp-bio-text@train", description="from the target: its forget corpus (or its "
                                "labelled fallback when that cannot be had)")
    retain_corpus: Name = Field("wikitext@train", description="the single retain corpus when retain_corpora is empty")
    retain_corpora: list[Name] = Field(default_factory=list, max_length=MAX_CORPORA,
                                       description="from the target: its retain corpora; a feature's retain "
                                                   "frequency is its highest over them (empty: [retain_corpus])")
    selection_tokens: int = Field(50_000, ge=16, le=MAX_STATS_TOKENS)
    thresholds: list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [0.01], min_length=1, max_length=16)
    ns: list[Annotated[int, Field(ge=1, le=MAX_FEATURES)]] = Field(default_factory=lambda: [10, 20], min_length=1,
                                                                  max_length=16)
    values: list[ClampValue] = Field(default_factory=lambda: [20.0, 50.0], min_length=1, max_length=MAX_VALUES)
    mode: Mode = "clamp"
    modes: list[Mode] = Field(default_factory=list, max_length=len(MODES),
                              description="several modes over the same configurations and questions (e.g. "
                                          "clamp and gated, side by side); empty: [mode]")
    gate: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="gated modes: tau")
    gate_percentile: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False,
                                          description="gated modes: tau = this percentile of rho over windows of "
                                                      "gate_corpus, calibrated per selection of features")
    gate_corpus: Name | None = Field(None, description="the corpus of gate_percentile (default wikitext@train)")
    forget_set: Name = Field("wmdp-bio", description="from the target: its forget questions, held-out part "
                             "(its eval_part, as `target eval` reports)")
    side_effect_sets: list[Name] = Field(default_factory=lambda: ["mmlu:side-effects"], max_length=8,
                                         description="from the target: its retain question sets, held-out part")
    known: bool = True
    strict_known: bool | None = Field(None, description="from the target (else false): the strict known filter "
                                      "(also wrong with the question text blanked); only with known")
    question_limit: int = Field(0, ge=0, le=100_000, description="first N questions of each set (0 = all)")
    loss_corpus: Name = Field("webtext", description="from the target: its loss corpus")
    loss_tokens: int = Field(10_000, ge=0, le=MAX_EVAL_TOKENS, description="0 disables loss added")
    delay_per_config: float = Field(0.0, ge=0, le=60, allow_inf_nan=False,
                                    description="test hook: seconds to wait after each configuration (--tiny only)")
    variants: list[Variant] = Field(default_factory=list, max_length=8,
                                    description="model variants ('rmu:<name>') evaluated as rows of their own "
                                                "(no clamp) on the same known questions and loss windows")
    model_variant: Variant = Field("base", description="the model the clean row and every clamp configuration "
                                   "run on: 'rmu:<name>' puts the clamps on top of that RMU model. The known "
                                   "questions, the feature selection and the clean loss stay the model as "
                                   "loaded's, so rows compare with a base sweep's")

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


class RMUTrainRequest(Request):
    """An RMU run on a target's forget and retain text; unset hyperparameters come from the
    model's defaults (assets/rmu.toml)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the run; its variant is rmu:<name>")]
    target: Name = DEFAULT_TARGET
    layer: int | None = Field(None, ge=0, le=1000, description="the steered layer (residual after this block)")
    update_layers: list[Annotated[int, Field(ge=0, le=1000)]] | None = Field(None, min_length=1, max_length=16)
    steering_coeff: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False)
    alpha: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False)
    lr: float | None = Field(None, gt=0, le=1.0, allow_inf_nan=False)
    batch_size: int | None = Field(None, ge=1, le=64)
    steps: int | None = Field(None, ge=1, le=100_000)
    ctx: int | None = Field(None, ge=8, le=4096)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    delay_per_step: float = Field(0.0, ge=0, le=10, allow_inf_nan=False, description="test hook (--tiny only)")


class RMURunOut(BaseModel):
    name: str
    variant: str
    target: str
    config: dict
    status: str
    step: int
    steps: int
    eta_s: float | None = None
    error: str | None = None
    note: str | None = None
    last: dict = {}


class RMURunList(BaseModel):
    runs: list[RMURunOut]


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


# ---------------------------------------------------------------- targets


class TargetSelection(BaseModel):
    threshold: float
    n: int
    tokens: int
    method: str = "frequency"  # or "search": the features most specific to query against background
    query: str = ""
    background: str = "webtext-train"


class TargetIntervention(BaseModel):
    mode: str
    c: float


class TargetOut(BaseModel):
    """A target (``targets.Target.to_dict()``) plus the forget corpus this server would use."""

    name: str
    description: str
    forget_corpus: str
    forget_questions: str
    retain_corpora: list[str]
    retain_questions: list[str]
    selection: TargetSelection
    intervention: TargetIntervention
    forget_corpus_fallback: str | None = None
    loss_corpus: str
    ppl_corpus: str | None = None
    eval_part: str
    strict_known: bool
    scoring: str | None = None
    orderings: bool
    demo_prompt: str
    source: str
    resolved_forget_corpus: str | None  # None: neither the corpus nor a fallback can be had here
    forget_corpus_note: str  # why the resolved corpus differs, or why there is none
    defined_in_app: bool = False  # saved by POST /api/targets (so DELETE /api/targets/{name} removes it)


class TargetList(BaseModel):
    default: str
    targets: list[TargetOut]


DEFAULT_RETAIN_CORPORA = ("quiz:retain@train", "wikitext@train", "webtext-train")  # the bio-basics target's
MAX_SAVED_QUESTION_CHARS = 5_000_000  # the question rows, as JSON


class TargetCreateRequest(Request):
    """A target defined in the app: its forget corpus (already split into documents) and its
    questions (rows in the WMDP schema: question, choices, answer; other fields are kept).
    Retain corpora and question sets are *named* ones only (never file paths)."""

    name: str = Field(min_length=1, max_length=40, pattern=NAME_RE.pattern,
                      description="1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit")
    description: str = Field("", max_length=2_000)
    documents: list[Annotated[str, Field(max_length=MAX_SAVED_TEXT)]] = Field(
        min_length=1, max_length=200_000, description=f"the forget corpus, at most {MAX_SAVED_TEXT:,} characters")
    questions: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_SAVED_QUESTIONS,
                                            description="the forget questions: {question, choices: [4], answer}")
    retain_corpora: list[Name] = Field(default_factory=lambda: list(DEFAULT_RETAIN_CORPORA), min_length=1,
                                       max_length=MAX_CORPORA)
    retain_questions: list[Name] = Field(default_factory=lambda: ["quiz:retain"], min_length=1, max_length=8)
    threshold: float = Field(0.01, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(50, ge=1, le=MAX_FEATURES)
    c: ClampValue = 200.0
    mode: StaticMode = "clamp"

    @model_validator(mode="after")
    def _sizes(self):
        total = sum(len(d) for d in self.documents)
        if total > MAX_SAVED_TEXT:
            raise ValueError(f"the forget corpus is {total:,} characters; at most {MAX_SAVED_TEXT:,}")
        size = len(json.dumps(self.questions))
        if size > MAX_SAVED_QUESTION_CHARS:
            raise ValueError(f"the questions are {size:,} characters as JSON; at most {MAX_SAVED_QUESTION_CHARS:,}")
        return self


class TargetDeleted(BaseModel):
    deleted: str


class TargetSelectRequest(Request):
    target: Name
    sae: Name | None = None
    n: int | None = Field(None, ge=1, le=MAX_FEATURES, description="default: the target's")
    threshold: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description="default: the target's")
    describe: bool = False
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")


class TargetSelectedFeature(SelectedFeature):
    retain_freqs: dict[str, float]  # per retain corpus; retain_freq is their max
    top_token: str | None = None  # a search selection: the query token it fires on most
    score: float | None = None  # a search selection: its specificity to the query


class TargetSelectResponse(BaseModel):
    target: str
    sae: str
    forget_corpus: str  # the corpus actually used (the target's, or its labelled fallback)
    retain_corpora: list[str]
    threshold: float | None  # None for a search selection
    method: str = "frequency"
    query: str | None = None
    background: str | None = None
    n_tokens: int
    note: str
    features: list[TargetSelectedFeature]
    variant: str = "base"  # the model variant every number above is on


class DemoRequest(Request):
    target: Name
    max_scan: int = Field(DEMO_MAX_SCAN, ge=1, le=500, description="questions checked at most in each set")


class DemoInterventionOut(BaseModel):
    sae: str
    mode: str
    c: float
    features: list[int]


class DemoExample(BaseModel):
    question: QuestionOut
    base: MCQScoreOut
    intervened: MCQScoreOut


class DemoResponse(BaseModel):
    target: str
    description: str
    forget_corpus: str
    forget_corpus_note: str
    retain_corpora: list[str]
    intervention: DemoInterventionOut
    forget_example: DemoExample | None  # a known forget question whose answer the clamp flips
    retain_example: DemoExample | None  # a known retain question that stays right
    n_checked_forget: int
    n_checked_retain: int
    summary: str
