"""One settings object for the engine, the CLI, the server and the app.

Filled, in increasing priority, from defaults, an optional TOML file
(``UNLEARN_CONFIG`` or ``./unlearn.toml``), ``UNLEARN_*`` environment variables and
explicit overrides (CLI flags). Keeping it in one place means ``info`` can print exactly
what every other entry point will use.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_core.core.paths import REPO_ROOT

EMBEDDED_MODEL = "embedded:gemma-3-270m"
EMBEDDED_SAE = "embedded"


@dataclass
class Settings:
    model: str = EMBEDDED_MODEL
    saes: list[str] = field(default_factory=lambda: [EMBEDDED_SAE])
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: str = str(REPO_ROOT / "cache")
    data_dir: str | None = None
    prompt_format: str = "auto"  # "plain" | "chat" | "auto" (chat for -it models)
    scoring: str = "auto"  # "letter" | "cloze" | "auto" (cloze for base models)
    targets_file: str | None = None  # a user's TOML of extra unlearning targets (see targets.py)
    job_backend: str = "local"  # evaluation jobs: "local" (one thread here) | "ray" (workers on a Ray cluster)
    ray_workers: int = 2  # Ray workers (one engine each) when this process starts its own Ray instance
    ray_address: str | None = None  # an existing Ray cluster ("auto", "host:6379"); else $RAY_ADDRESS, else local

    def resolved_device(self) -> str:
        from unlearn_core.core.devices import pick_device

        return pick_device(self.device)

    def resolved_dtype(self) -> str:
        from unlearn_core.core.devices import pick_dtype

        return pick_dtype(self.dtype, self.resolved_device())

    def is_instruct(self) -> bool:
        name = self.model.lower()
        return name.endswith("-it") or "instruct" in name or "-chat" in name

    def resolved_prompt_format(self) -> str:
        if self.prompt_format != "auto":
            return self.prompt_format
        return "chat" if self.is_instruct() else "plain"

    def resolved_scoring(self) -> str:
        if self.scoring != "auto":
            return self.scoring
        return "letter" if self.is_instruct() else "cloze"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["resolved"] = {
            "device": self.resolved_device(),
            "dtype": self.resolved_dtype(),
            "prompt_format": self.resolved_prompt_format(),
            "scoring": self.resolved_scoring(),
        }
        return d


_VALID = {
    "prompt_format": {"auto", "plain", "chat"},
    "scoring": {"auto", "letter", "cloze"},
    "dtype": {"auto", "float32", "bfloat16", "float16"},
    "job_backend": {"local", "ray"},
}


def _validate(s: Settings) -> Settings:
    for key, allowed in _VALID.items():
        if getattr(s, key) not in allowed:
            raise ValueError(f"setting {key}={getattr(s, key)!r} is not one of {sorted(allowed)}")
    if not s.saes:
        raise ValueError("at least one SAE must be configured")
    if s.ray_workers < 1:
        raise ValueError(f"setting ray_workers={s.ray_workers} must be at least 1")
    return s


def load_settings(overrides: dict[str, Any] | None = None, config_file: str | None = None) -> Settings:
    """Defaults < TOML file < UNLEARN_* environment < overrides (None values ignored)."""
    values: dict[str, Any] = {}
    path = config_file or os.environ.get("UNLEARN_CONFIG")
    if path is None and Path("unlearn.toml").exists():
        path = "unlearn.toml"
    if path:
        if not Path(path).is_file():
            raise ValueError(f"settings file {path!r} not found (from --config or UNLEARN_CONFIG)")
        with open(path, "rb") as f:
            values.update(tomllib.load(f))
    names = {f.name for f in dataclasses.fields(Settings)}
    for name in names:
        env = os.environ.get(f"UNLEARN_{name.upper()}")
        if env:
            values[name] = env
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = v
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}; known: {sorted(names)}")
    if isinstance(values.get("saes"), str):
        values["saes"] = [x.strip() for x in values["saes"].split(";") if x.strip()]
    if isinstance(values.get("ray_workers"), str):  # from the environment
        try:
            values["ray_workers"] = int(values["ray_workers"])
        except ValueError:
            raise ValueError(f"setting ray_workers={values['ray_workers']!r} is not an integer") from None
    return _validate(Settings(**values))
