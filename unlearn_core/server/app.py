"""The HTTP API (FastAPI) over one loaded engine: ``create_app(engine_factory)``, wiring only.

The routes live in :mod:`.routers` (one router per resource); they reach the server state and
the job runners through FastAPI dependencies (:mod:`.deps`), which read what ``create_app``
puts on ``app.state``. Errors are mapped in :mod:`.errors`.

How many users it holds: the server keeps ONE model in memory and serializes every use of it
with one lock, so model work never runs in parallel; endpoints are plain ``def`` functions run
in FastAPI's threadpool (40 threads), so waiting requests queue on the lock instead of failing.
A request's latency is therefore its own cost plus the cost of whatever is ahead of it. That
is comfortable for a handful of interactive users (a lab group, ~5-10 people) and not meant
for more. Measured costs on the embedded model are in docs/benchmarks.md (`bench/server.py`,
`bench/slider.py`). Long work (loss, perplexity, feature statistics, known filters, curves,
generation) takes the lock in steps of about a second (``state.run_steps``), so a request waits
at most about that long behind another one (``lock_stats`` in ``/api/info`` shows the holds).
Evaluation jobs run in one background thread, and their steps give way to every waiting
request.

Errors: bad input is a 4xx with ``{"detail": message}`` (422 for schema violations, 400 for
bad values such as out-of-range features or unknown corpora, 404 for unknown SAEs, question
sets, questions and jobs, 401 for a missing token, 503 while the model loads); anything else
is a logged 500 with a generic message and no traceback.

Security: when ``UNLEARN_TOKEN`` is set, every ``/api`` endpoint except ``/api/health`` needs
``Authorization: Bearer <token>``. Corpora are names only (never file paths), nothing is
unpickled, and neither the token nor the Neuronpedia key is logged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import Depends, FastAPI

from unlearn_core.model.engine import Engine
from unlearn_core.server import prefetch as PF
from unlearn_core.server import schemas as S
from unlearn_core.server.access import drop_unfinished_saves
from unlearn_core.server.attack_jobs import AttackRunner
from unlearn_core.server.deps import require_token
from unlearn_core.server.errors import install_error_handlers
from unlearn_core.server.jobs import JobRunner
from unlearn_core.server.rmu_jobs import PERSIST_METHOD, RMURunner
from unlearn_core.server.routers import (
    attacks,
    features,
    info,
    jobs,
    metrics,
    persist,
    questions,
    rmu,
    targets,
    tasks,
    text,
)
from unlearn_core.server.state import ServerState
from unlearn_core.server.steps import run_steps
from unlearn_core.server.tasks import TaskRunner

log = logging.getLogger("unlearn_core.server")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
API_ROUTERS = (
    info.router,
    text.router,
    features.router,
    questions.router,
    targets.router,
    metrics.router,
    jobs.router,
    rmu.router,
    persist.router,
    attacks.router,
    tasks.router,
)
GRACEFUL_S = 5  # uvicorn's wait for open requests after SIGTERM (stepped work has stopped by then)
EXIT_WATCHDOG_S = 9  # the process ends this long after SIGTERM whatever still runs


def make_prefetcher(state: ServerState) -> PF.Prefetcher:
    """Scores of slider neighbours, computed in the background (lowest priority for the model lock)."""

    def prefetch_scores(q, ivs, values) -> list:
        from unlearn_core.evaluation.mcq import score_curve

        out: list = []
        with state.background():
            run_steps(state, [lambda engine: out.extend(score_curve(engine, q, ivs, values))], "slider prefetch")
        return out

    return PF.Prefetcher(state.scores, prefetch_scores)


def stop_work(app: FastAPI) -> None:
    """Stop long work at its next lock step: requests end with a 503, tasks and jobs stay
    unfinished on disk (they run again after a restart), RMU and persistent runs keep their last checkpoint."""
    app.state.server.stopping.set()
    for worker in (
        app.state.runner,
        app.state.rmu_runner,
        app.state.persist_runner,
        app.state.tasks,
        app.state.attacks,
    ):
        worker.stop()


def create_app(
    engine_factory: Callable[[], Engine],
    *,
    token: str | None = None,
    allow_test_options: bool = False,
    lru_capacity: int = 64,
    load_wait_s: float = 600.0,
) -> FastAPI:
    """The API over the engine ``engine_factory()`` builds (once, in a background thread).

    ``token`` defaults to ``$UNLEARN_TOKEN``; ``allow_test_options`` enables the job option
    ``delay_per_config`` (for ``--tiny`` servers and tests).
    """
    token = os.environ.get("UNLEARN_TOKEN") if token is None else token
    state = ServerState(engine_factory, lru_capacity=lru_capacity, load_wait_s=load_wait_s)
    runner = JobRunner(state, allow_delay=allow_test_options)
    rmu_runner = RMURunner(state, allow_delay=allow_test_options)
    persist_runner = RMURunner(state, allow_delay=allow_test_options, method=PERSIST_METHOD)
    state.scores = PF.ScoreLRU()  # slider scores by (question, interventions without c) and c
    state.prefetcher = make_prefetcher(state)
    task_runner = TaskRunner(state, tasks.task_kinds())
    attack_runner = AttackRunner(state, allow_delay=allow_test_options)
    state.on_ready += [
        drop_unfinished_saves,
        runner.start,
        rmu_runner.start,
        persist_runner.start,
        task_runner.start,
        attack_runner.start,
    ]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start_loading()
        yield
        stop_work(app)

    app = FastAPI(
        title="SAE Unlearning Workbench server",
        version="0.1.0",
        lifespan=lifespan,
        description=(__doc__ or "").split("\n\n")[2],
        responses={400: {"model": S.ErrorResponse}, 404: {"model": S.ErrorResponse}, 422: {"model": S.ErrorResponse}},
    )
    app.state.server, app.state.runner, app.state.rmu_runner, app.state.token = state, runner, rmu_runner, token
    app.state.tasks, app.state.attacks, app.state.persist_runner = task_runner, attack_runner, persist_runner
    install_error_handlers(app)
    app.include_router(info.health_router)
    for router in API_ROUTERS:
        app.include_router(router, prefix="/api", dependencies=[Depends(require_token)])
    return app


# ---------------------------------------------------------------- running it


def engine_factory_for(settings, tiny: bool = False) -> Callable[[], Engine]:
    """The real engine from settings, or the tiny test backend (with the settings' cache/data dirs)."""
    if tiny:

        def factory() -> Engine:
            from unlearn_core.model.tiny import tiny_engine

            engine = tiny_engine(cache_dir=settings.cache_dir)
            if settings.data_dir:
                engine.settings.data_dir = settings.data_dir
            engine.settings.targets_file = settings.targets_file
            for k in ("job_backend", "ray_workers", "ray_address"):
                setattr(engine.settings, k, getattr(settings, k))
            return engine

        return factory

    def load() -> Engine:
        from unlearn_core.model.engine import load_engine

        return load_engine(settings, progress=False)

    return load


def serve(settings, host: str = "127.0.0.1", port: int = 8765, tiny: bool = False, log_level: str = "warning") -> None:
    import uvicorn

    app = create_app(engine_factory_for(settings, tiny), allow_test_options=tiny)
    if host not in LOCAL_HOSTS and not os.environ.get("UNLEARN_TOKEN"):
        log.warning("listening on %s without UNLEARN_TOKEN: anyone who can reach this port can use the model", host)
    backend = "tiny test backend" if tiny else settings.model
    print(f"unlearn server ({backend}) on http://{host}:{port}  - API docs at /docs", file=sys.stderr, flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, timeout_graceful_shutdown=GRACEFUL_S)
    )
    plain_exit = server.handle_exit

    def handle_exit(sig, frame) -> None:
        """SIGTERM/SIGINT: stop long work now (uvicorn would wait for open requests first), and
        end the process after ``EXIT_WATCHDOG_S`` whatever still runs (one forward pass, a
        thread that will not end). Job rows and task files are written atomically or fsynced."""
        stop_work(app)
        watchdog = threading.Timer(EXIT_WATCHDOG_S, os._exit, (0,))
        watchdog.daemon = True  # never what keeps the process alive
        watchdog.start()
        plain_exit(sig, frame)

    server.handle_exit = handle_exit
    server.run()
