"""Limits on a target defined in the app: torch-free.

Why apart from ``targets``: the HTTP schemas validate a new target's name and sizes without
loading torch (the Streamlit UI and remote clients import them).
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_SAVED_TEXT = 5_000_000  # characters of forget corpus a saved target may hold
MAX_SAVED_QUESTIONS = 5_000
