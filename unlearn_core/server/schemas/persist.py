"""Persistent SAE-guided unlearning runs over HTTP (the run's view is RMU's: ``RMURunOut``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from unlearn_core.features.default_target import DEFAULT_TARGET
from unlearn_core.server.schemas.common import Name, Request

Layer = Annotated[int, Field(ge=0, le=1000)]


class PersistTrainRequest(Request):
    """A persistent run on a target's selected features; unset settings come from the model's
    defaults (core/assets/persist.toml)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the run; its variant is persist:<name>")]
    target: Name = DEFAULT_TARGET
    method: str | None = Field(None, pattern=r"^[a-z_]{1,32}$", description="selection method (default: the target's)")
    n: int | None = Field(None, ge=1, le=1000, description="selected features (default: the target's N)")
    update_layers: list[Layer] | None = Field(None, min_length=1, max_length=16)
    retain_layers: list[Layer] | None = Field(None, min_length=1, max_length=16)
    forget_weight: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False, description="0: the no-op control")
    retain_weight: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False)
    lm_weight: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False)
    margin: float | None = Field(None, ge=0, le=1e6, allow_inf_nan=False, description="pre-activations to -margin")
    forget_mode: Literal["suppress", "clamp"] | None = Field(
        None, description="suppress: the features' pre-activations to -margin; clamp: the clamp's residual"
    )
    clamp: float | None = Field(None, ge=0, le=1e6, allow_inf_nan=False, description="clamp mode's c (0: the target's)")
    retain_norm: Literal["total", "per_dim"] | None = Field(
        None, description="the retain term's scale: the residual's whole energy, or each dimension's own"
    )
    features: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, max_length=1000, description="given features in place of the target's selection"
    )
    lr: float | None = Field(None, ge=0, le=1.0, allow_inf_nan=False)
    batch_size: int | None = Field(None, ge=1, le=64)
    steps: int | None = Field(None, ge=1, le=100_000)
    ctx: int | None = Field(None, ge=8, le=4096)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    delay_per_step: float = Field(0.0, ge=0, le=10, allow_inf_nan=False, description="test hook (--tiny only)")
