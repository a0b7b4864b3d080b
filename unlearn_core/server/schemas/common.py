"""What every request shares: input limits, the intervention models, the base request.

Every limit lives here so that validation (422) happens before the model is touched, and so
``/api/info`` can tell clients exactly what the server accepts. Requests forbid unknown
fields, so a typo in a field name is an error instead of a silently ignored option.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unlearn_core.features.target_limits import MAX_SAVED_QUESTIONS, MAX_SAVED_TEXT
from unlearn_core.method.modes import GATED_MODES, MAX_ABS_CLAMP, MODES

# One forward pass over the text: at 20,000 characters search took 58.8 s and activations 38.4 s on
# the embedded model at load 5.7 (bench/sync_limits.py); 8,000 characters (~2,000 tokens) keep both well under a minute.
MAX_TEXT_CHARS = 8_000
MAX_FEATURES = 512  # total feature ids in one call (over all interventions)
MAX_VALUES = 64  # clamp values in one /api/mcq call
MAX_INTERVENTIONS = 8
MAX_CORPORA = 4
MAX_STATS_TOKENS = 200_000  # feature statistics (dashboard, select, search background)
MAX_EVAL_TOKENS = 100_000  # loss added, perplexity
MAX_PAGE = 2_000  # questions per /api/questions page
MAX_JOB_CONFIGS = 2_000
MAX_NEW_TOKENS = 512
# What a synchronous request may ask for: about 10 s on the embedded model (Gemma 3 270M, 2-core
# CPU: ~20 ms a token a pass, ~0.1 s a generated token); more goes through POST /api/tasks/<kind>.
SYNC_EVAL_TOKENS = 512  # n_tokens times passes (clean, and intervened) of /api/perplexity, /api/loss_added
SYNC_NEW_TOKENS = 96  # max_new_tokens times continuations (base, and intervened) of /api/generate
# ... and what it may compute that no cache holds yet (bench/sync_limits.py measures each at its cap):
# questions of a /api/questions?known=true page whose known status is not cached (a server on faster
# hardware may raise it: UNLEARN_SYNC_KNOWN_QUESTIONS, read at start)
SYNC_KNOWN_QUESTIONS = int(os.environ.get("UNLEARN_SYNC_KNOWN_QUESTIONS", "6"))
SYNC_DEMO_SCAN = 4  # /api/demo's max_scan (questions checked in each of the two sets)
SYNC_STATS_TOKENS = 2_048  # feature-statistics tokens neither cached nor shipped (dashboard, select, search)
SYNC_DESCRIPTIONS = 4  # automatic descriptions not cached yet of /api/features/select with describe

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=300)]
FeatureId = Annotated[int, Field(ge=0)]
ClampValue = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_CLAMP, le=MAX_ABS_CLAMP)]
# a sweep's c: the features are set to -c, so a negative c would raise them (steering, not unlearning)
SweepClampValue = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=MAX_ABS_CLAMP)]
Variant = Annotated[
    str,
    Field(
        pattern=r"^(base|(rmu|persist):[A-Za-z0-9_.-]{1,64})$",
        description="the model variant: 'base' (the model as loaded), 'rmu:<name>' (a finished RMU "
        "run's weight delta) or 'persist:<name>' (a finished persistent SAE-guided run's)",
    ),
]
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
    gate: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False, description="gated modes: tau; the gate opens when rho > tau"
    )
    gate_percentile: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        allow_inf_nan=False,
        description="gated modes: tau = this percentile of rho over windows of gate_corpus (DSG uses 95)",
    )
    gate_corpus: Name | None = Field(
        None, description="the retain corpus a percentile is taken on (default wikitext@train)"
    )

    @model_validator(mode="after")
    def _gate(self):
        if self.mode in GATED_MODES:
            if (self.gate is None) == (self.gate_percentile is None):
                raise ValueError(f"mode {self.mode!r} needs exactly one of gate (tau) or gate_percentile")
            if self.gate_corpus is not None and self.gate_percentile is None:
                raise ValueError("gate_corpus goes with gate_percentile")
        elif self.gate is not None or self.gate_percentile is not None or self.gate_corpus is not None:
            raise ValueError(
                f"gate, gate_percentile and gate_corpus are for the gated modes {GATED_MODES}, not {self.mode!r}"
            )
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
    sync_eval_tokens: int = SYNC_EVAL_TOKENS  # synchronous perplexity / loss added: n_tokens x passes
    sync_new_tokens: int = SYNC_NEW_TOKENS  # synchronous generation: max_new_tokens x continuations
    sync_known_questions: int = SYNC_KNOWN_QUESTIONS  # synchronous known filter: questions not cached yet
    sync_demo_scan: int = SYNC_DEMO_SCAN  # synchronous guided demo: max_scan
    sync_stats_tokens: int = SYNC_STATS_TOKENS  # synchronous features: statistics tokens not cached or shipped
    sync_descriptions: int = SYNC_DESCRIPTIONS  # synchronous selection: descriptions not cached yet
    max_target_text_chars: int = MAX_SAVED_TEXT  # a target defined in the app: its forget corpus
    max_target_questions: int = MAX_SAVED_QUESTIONS  # ... and its questions


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None
