"""Where the package, its shipped assets (``core/assets``: the registries and the embedded SAE)
and the repository checkout are (one place, so a module that moves never has to count ``parent``
calls)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
ASSETS = PACKAGE_DIR / "core" / "assets"
REPO_ROOT = PACKAGE_DIR.parent
