"""The default unlearning target's name, in a module of its own: the CLI, the server, the app
and the benches name it without importing the target registry (and with it torch)."""

from __future__ import annotations

DEFAULT_TARGET = "bio-basics"
