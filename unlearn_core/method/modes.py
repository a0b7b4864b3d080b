"""The intervention modes' names, apart from the hooks, so that argument parsers and target
definitions can validate a mode without importing torch."""
from __future__ import annotations

MODES = ("clamp", "zero", "add", "reconstruct", "gated", "dsg")
GATED_MODES = ("gated", "dsg")
