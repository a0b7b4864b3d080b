"""How errors become responses: 4xx with ``{"detail": message}``, a logged generic 500 otherwise.

Why generic 500s: a traceback or an echoed input (maybe huge, maybe NaN) tells a client nothing
it can act on and may leak internals; the server's log keeps the details.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from unlearn_core.data import loaders as D
from unlearn_core.server.state import EngineNotReady, ShuttingDown
from unlearn_core.server.sync_limits import TaskRequired

log = logging.getLogger("unlearn_core.server")


def message(e: BaseException) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def validation_detail(errors: list[dict]) -> tuple[str, list[dict]]:
    """Error locations and messages, without echoing the input (it may be huge, or NaN)."""
    clean = [
        {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors[:20]
    ]
    text = "; ".join(f"{'.'.join(c['loc'][1:] or c['loc'])}: {c['msg']}" for c in clean)
    return f"invalid request: {text}", clean


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        detail, errors = validation_detail(list(exc.errors()))
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(EngineNotReady)
    async def _loading(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ShuttingDown)
    async def _stopping(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})

    @app.exception_handler(D.DataUnavailableError)
    async def _data(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(TaskRequired)
    async def _task_required(request, exc: TaskRequired):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(KeyError)
    async def _not_found(request, exc):
        return JSONResponse({"detail": message(exc)}, status_code=404)

    @app.exception_handler(ValueError)
    async def _bad_value(request, exc):
        return JSONResponse({"detail": message(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (logged on the server)"}, status_code=500)
