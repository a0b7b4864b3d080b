"""RMU training runs over HTTP."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from unlearn_core.features.default_target import DEFAULT_TARGET
from unlearn_core.server.schemas.common import Name, Request


class RMUTrainRequest(Request):
    """An RMU run on a target's forget and retain text; unset hyperparameters come from the
    model's defaults (core/assets/rmu.toml)."""

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
    history: list[dict] = Field(default_factory=list, description="every step's losses: the training curve")


class RMURunList(BaseModel):
    runs: list[RMURunOut]
