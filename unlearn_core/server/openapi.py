"""The committed HTTP contract, ``docs/openapi.json``: what ``create_app`` serves at /openapi.json.

Why committed: remote users and reviewers read the API without running a server, and a test
fails when the routes or schemas change without the file (regenerate it with
``python -m unlearn_core.server.openapi``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unlearn_core.core.paths import REPO_ROOT

OPENAPI_PATH = REPO_ROOT / "docs" / "openapi.json"
REGENERATE = "python -m unlearn_core.server.openapi"


def schema() -> dict:
    """The app's OpenAPI schema, built with the tiny backend (never loaded: no model is needed)."""
    from unlearn_core.server.app import create_app

    def tiny():  # the schema does not depend on the engine; create_app only keeps the factory
        from unlearn_core.model.tiny import tiny_engine

        return tiny_engine()

    return create_app(tiny, token="").openapi()


def render(spec: dict) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def write(path: Path = OPENAPI_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(schema()), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write(Path(sys.argv[1]) if len(sys.argv) > 1 else OPENAPI_PATH)}")
