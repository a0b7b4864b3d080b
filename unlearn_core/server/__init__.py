"""The cached model server: one process holds the model, many clients share it.

``create_app(engine_factory)`` builds the FastAPI app; ``serve`` runs it with uvicorn
(``python -m unlearn_core serve``). See :mod:`.app` for the endpoints and the concurrency
statement, :mod:`.jobs` for persisted, resumable evaluation sweeps.
"""
from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
