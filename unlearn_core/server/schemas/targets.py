"""Unlearning targets: listing, defining in the app, selection and the guided demo."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unlearn_core.evaluation.demo_limits import MAX_SCAN as DEMO_MAX_SCAN  # questions the demo checks per set
from unlearn_core.evaluation.verdicts import GenerationCheck
from unlearn_core.features.target_limits import MAX_SAVED_QUESTIONS, MAX_SAVED_TEXT, NAME_RE
from unlearn_core.server.schemas.common import MAX_CORPORA, MAX_FEATURES, ClampValue, Name, Request, StaticMode, Variant
from unlearn_core.server.schemas.features import SelectedFeature, SelectionMethod
from unlearn_core.server.schemas.questions import MCQScoreOut, QuestionOut


class TargetSelection(BaseModel):
    threshold: float
    n: int
    tokens: int
    method: str = "frequency"  # or "search" (specificity to query), "attribution" or "fisher" (train-half questions)
    query: str = ""
    background: str = "webtext-train"


class TargetIntervention(BaseModel):
    # a target's per-feature clamp rule, when not the uniform c, comes along as "scale": "forget-max"
    # (c_i = c * the feature's max on the forget corpus / the median's); absent for the uniform c
    model_config = ConfigDict(extra="allow")

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
    probes: str | None = None  # the attack bench's probe set of the forget questions
    choice_retain: list[str] = []  # the retain sets the default's choice pools (empty: the first)
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

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=NAME_RE.pattern,
        description="1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit",
    )
    description: str = Field("", max_length=2_000)
    documents: list[Annotated[str, Field(max_length=MAX_SAVED_TEXT)]] = Field(
        min_length=1, max_length=200_000, description=f"the forget corpus, at most {MAX_SAVED_TEXT:,} characters"
    )
    questions: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_SAVED_QUESTIONS,
        description="the forget questions: {question, choices: [4], answer}",
    )
    retain_corpora: list[Name] = Field(
        default_factory=lambda: list(DEFAULT_RETAIN_CORPORA), min_length=1, max_length=MAX_CORPORA
    )
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
    method: SelectionMethod | None = Field(
        None,
        description="default: the target's own (frequency when a threshold is given); attribution and fisher "
        "rank features by the train half of the target's known questions",
    )
    describe: bool = False
    variant: Variant = Field("base", description="run on this model variant in place of the model as loaded")


class TargetSelectedFeature(SelectedFeature):
    retain_freqs: dict[str, float]  # per retain corpus; retain_freq is their max
    top_token: str | None = None  # a search selection: the query token it fires on most


class TargetSelectResponse(BaseModel):
    target: str
    sae: str
    forget_corpus: str  # the corpus actually used (the target's, or its labelled fallback)
    retain_corpora: list[str]
    threshold: float | None  # None for a search or question-based selection
    method: str = "frequency"
    query: str | None = None
    background: str | None = None
    scoring: str | None = None  # attribution / fisher: how the questions were scored
    forget_questions: str | None = None  # attribution / fisher: the train-half sets read
    retain_questions: list[str] | None = None
    n_forget_questions: int | None = None  # ... and how many known questions of each
    n_retain_questions: int | None = None
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
    scales: list[float] | None = None  # per-feature clamp values c_i = c * scales[i] (None: c for all)
    gate: float | None = None  # gated modes: tau, calibrated on the target's retain corpora


class VerdictOut(BaseModel):
    """``evaluation.verdicts.Verdict``: "kept" is still right with P(correct) at most ``tolerance`` lower."""

    kind: Literal["forgotten", "kept", "less_sure", "now_right", "still_wrong"]
    p_clean: float
    p_clamped: float
    tolerance: float
    label: str
    sentence: str


class DemoExample(BaseModel):
    question: QuestionOut
    base: MCQScoreOut
    intervened: MCQScoreOut
    verdict: VerdictOut


class DemoResponse(BaseModel):
    target: str
    description: str
    forget_corpus: str
    forget_corpus_note: str
    retain_corpora: list[str]
    intervention: DemoInterventionOut
    forget_example: DemoExample | None  # a known forget question whose answer the clamp flips
    retain_example: DemoExample | None  # a known retain question kept (else one still right, less sure)
    n_checked_forget: int
    n_checked_retain: int
    generation: GenerationCheck | None = None  # None: no train-half forget question answered in free text
    summary: str
