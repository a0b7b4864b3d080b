"""The cached model server: one process holds the model, many clients share it.

``create_app(engine_factory)`` builds the FastAPI app; ``serve`` runs it with uvicorn
(``python -m unlearn_core serve``). See :mod:`.app` for the concurrency statement,
:mod:`.routers` for the endpoints (one router per resource), :mod:`.jobs` for persisted,
resumable evaluation sweeps and :mod:`.tasks` for long requests run in the background.

The HTTP contract, :mod:`.schemas` and :mod:`.client` (with :mod:`.client_transport` and
:mod:`.client_jobs`), imports no torch: the Streamlit app and remote users import them without
the engine. So this package's own names load on first use.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'unlearn_core.server' has no attribute {name!r}")
