"""What a route reaches through FastAPI ``Depends``: the server state, the job runners, the token check.

Why dependencies and not closures: the routers are plain modules (one per resource) that
``create_app`` includes; each request finds the objects ``create_app`` built on ``app.state``.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from unlearn_core.server.attack_jobs import AttackRunner
from unlearn_core.server.jobs import JobRunner
from unlearn_core.server.rmu_jobs import RMURunner
from unlearn_core.server.state import ServerState

bearer = HTTPBearer(auto_error=False, description="the server's UNLEARN_TOKEN")


def get_state(request: Request) -> ServerState:
    return request.app.state.server


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


def get_rmu_runner(request: Request) -> RMURunner:
    return request.app.state.rmu_runner


def get_persist_runner(request: Request) -> RMURunner:
    return request.app.state.persist_runner


def get_attack_runner(request: Request) -> AttackRunner:
    return request.app.state.attacks


def get_token(request: Request) -> str | None:
    return request.app.state.token


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """With a token set, every ``/api`` route but health needs ``Authorization: Bearer <token>``
    (compared in constant time)."""
    token = get_token(request)
    if not token:
        return
    given = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401,
            "missing or wrong bearer token: send 'Authorization: Bearer <UNLEARN_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


State = Annotated[ServerState, Depends(get_state)]
Runner = Annotated[JobRunner, Depends(get_runner)]
RMU = Annotated[RMURunner, Depends(get_rmu_runner)]
Persist = Annotated[RMURunner, Depends(get_persist_runner)]
Attacks = Annotated[AttackRunner, Depends(get_attack_runner)]
