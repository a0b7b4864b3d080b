"""The attack bench over HTTP: a run's request, its progress and its result."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from unlearn_core.features.default_target import DEFAULT_TARGET
from unlearn_core.server.schemas.common import Name, Request

MAX_DEFENCES = 8
MAX_ATTACKS = 16
# the bench's attacks that need no trained weights: every threat-model "api" attack (the CLI's default)
DEFAULT_ATTACKS = ["rephrase", "fill_blank", "context", "few_shot", "filler", "generation"]
DEFENCE_HELP = (
    "default (the target's default intervention), clamp / gated / dsg (its features and c in that mode), "
    "rmu:<run> (a finished RMU run's weights), persist:<run> (a finished persistent SAE-guided run's), "
    "none (the clean model: a control that recovers nothing)"
)

DefenceName = Annotated[str, Field(pattern=r"^(default|clamp|gated|dsg|none|(rmu|persist):[A-Za-z0-9_.-]{1,64})$")]
AttackName = Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
RunStatus = Literal["queued", "running", "done", "cancelled", "failed", "paused"]


def _unique(names: list[str], what: str) -> list[str]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{what} named twice: {', '.join(twice)}")
    return names


class AttackSpec(Request):
    """One run of the attack bench: every attack against every defence on a target's held-out
    facts (the CLI's ``attack``). Unknown names fail the request (4xx), not the run."""

    target: Name = DEFAULT_TARGET
    defences: list[DefenceName] = Field(
        default_factory=lambda: ["default"], min_length=1, max_length=MAX_DEFENCES, description=DEFENCE_HELP
    )
    attacks: list[AttackName] = Field(
        default_factory=lambda: list(DEFAULT_ATTACKS),
        min_length=1,
        max_length=MAX_ATTACKS,
        description="the bench's attacks (GET /api/attacks lists them with their threat models); "
        "few_shot runs once per k",
    )
    probes: Name | None = Field(
        None, description="a named probe set (default: the target's own); files only where a server's target names them"
    )
    part: Literal["train", "heldout", "all"] | None = Field(None, description="default: the target's eval_part")
    delay_per_row: float = Field(0.0, ge=0, le=10, allow_inf_nan=False, description="test hook (--tiny only)")

    @field_validator("defences")
    @classmethod
    def _defences(cls, v: list[str]) -> list[str]:
        return _unique(v, "a defence is")

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, v: list[str]) -> list[str]:
        return _unique(v, "an attack is")


class AttackRunOut(BaseModel):
    """A run's status and progress: ``done`` of ``total`` rows (one per defence x attack; few-shot
    one per k), the row being computed, and an ETA from this run's rows so far."""

    id: str
    status: RunStatus
    target: str
    defences: list[str]
    attacks: list[str]
    part: str | None = None
    probes: str | None = None
    done: int
    total: int
    done_at_start: int = 0  # rows found on disk when this run (re)started: not computed again
    phase: str | None = None  # running: defences | known questions | rows
    current: str | None = None  # running: the row being computed ("gated × few_shot:8")
    eta_s: float | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    note: str | None = None


class AttackRunList(BaseModel):
    runs: list[AttackRunOut]
    attacks: dict[str, str] = Field(description="every attack the server offers -> its threat model (api | weights)")
    defences: list[str] = Field(description="the defence names besides rmu:<run>")


class AttackResult(BaseModel):
    """The bench's result (the CLI's ``attack --json``) with the rows finished so far; ``complete``
    once every row is in. Each row's ``facts`` hold the per-fact outcomes, both texts and the
    probabilities P(correct) clean / defended / attacked."""

    id: str
    status: RunStatus
    complete: bool
    target: str
    part: str | None = None
    probes: str | None = None
    n_known_forget: int | None = None  # None until the run has read its known questions
    n_known_retain: int | None = None
    retain_set: str | None = None
    defences: list[dict[str, Any]] = []
    rows: list[dict[str, Any]]
    wall_s: float
