"""The guided demo's scan bound: torch-free, so the HTTP schemas can name it without torch."""

from __future__ import annotations

MAX_SCAN = 60  # questions the guided demo checks per set by default
