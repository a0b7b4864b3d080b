"""Question sets and multiple-choice scoring (the slider's curve)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from unlearn_core.server.schemas.common import (
    MAX_PAGE,
    MAX_TEXT_CHARS,
    MAX_VALUES,
    ClampValue,
    GateOut,
    InterventionOut,
    InterventionsRequest,
    Name,
    Request,
    Variant,
)


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


QUESTION_SET_HELP = (
    "quiz:bio | quiz:retain!overlaps_bio | wmdp-bio | "
    "mmlu:<subject,...> | mmlu:side-effects, optionally @train/@heldout"
)


class QuestionsKnownRequest(Request):
    """``GET /api/questions?known=true`` as a task body: the page whose known questions it keeps."""

    set: Name = Field("wmdp-bio", description=QUESTION_SET_HELP)
    strict: bool = Field(False, description="the strict filter (also wrong with the question text blanked)")
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)


class InlineQuestion(Request):
    question: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = Field(
        description="the question text; empty: the question blanked, as the strict known filter scores it "
        "(what a model gets right with no question is answer bias, not knowledge)"
    )
    choices: list[Annotated[str, Field(min_length=1, max_length=2_000)]] = Field(min_length=4, max_length=4)
    answer: int = Field(ge=0, le=3)
    subject: Name = "biology"
    probe: Literal["paraphrase", "fill_blank", "context", "generation"] | None = Field(
        None,
        description="a probe's kind, scored as the attack bench scores it: fill_blank's choices are scored "
        "right after the sentence itself, every other kind in the quiz format",
    )


class MCQRequest(InterventionsRequest):
    question_id: Name | None = None
    question: InlineQuestion | None = None
    set: Name = "wmdp-bio"
    values: list[ClampValue] | None = Field(None, min_length=1, max_length=MAX_VALUES)
    variant: Variant = Field(
        "base",
        description="score on this model variant (base and the interventions both: "
        "the interventions apply on top of it)",
    )

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
