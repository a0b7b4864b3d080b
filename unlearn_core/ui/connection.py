"""The app's one connection to the workbench server: the client and the cached server calls.

Every page reaches the server through :func:`call` (or :func:`cached` for read-only requests), so
a test can watch or replace that one function.
"""

from __future__ import annotations

import json
import os
from typing import Any

import streamlit as st

from unlearn_core.server.client import (
    DEFAULT_URL,
    ServerError,
    ServerUnavailableError,
    UnlearnClient,
    needs_task,
)


def server_url() -> str:
    return (os.environ.get("UNLEARN_SERVER_URL") or DEFAULT_URL).rstrip("/")


@st.cache_resource(show_spinner=False)
def _client(url: str, token: str) -> UnlearnClient:
    return UnlearnClient(url, token=token or "", timeout=3600.0)


def get_client() -> UnlearnClient:
    """One client per (URL, token) for the whole app process (``st.cache_resource``)."""
    return _client(server_url(), os.environ.get("UNLEARN_TOKEN") or "")


def call(method: str, /, *args, retry: bool = True, **kwargs) -> Any:
    """``client.<method>(...)``. A pure request is retried once when the connection drops (a
    server closes a kept-alive connection after an internal error); submissions are not.
    ``method`` is positional-only: a request may have a field named ``method`` (a selection's)."""
    client = get_client()
    try:
        return getattr(client, method)(*args, **kwargs)
    except ServerUnavailableError:
        if not retry:
            raise
        return getattr(client, method)(*args, **kwargs)


@st.cache_data(show_spinner=False, ttl=3600, max_entries=512)
def _cached(url: str, engine_sig: str, method: str, args_json: str) -> Any:
    return call(method, **json.loads(args_json))


def cached(method: str, /, **kwargs) -> Any:
    """A server call cached in the app (``st.cache_data``) by URL, loaded model and arguments.

    Only for deterministic, read-only requests (scores, activations, dashboards, questions). One
    the server answers with a synchronous limit that names a task (statistics, known statuses not
    cached yet) is made again as the client's ``<method>_task``, which waits for the task."""
    sig = st.session_state.get("_engine_sig", "")
    key = (server_url(), sig, method, json.dumps(kwargs, sort_keys=True))
    done = task_results()
    if key in done:  # computed as a task earlier, by any session
        return done[key]
    try:
        return _cached(*key)
    except ServerError as e:  # past the synchronous limit (statistics or known statuses not cached yet)
        if not needs_task(e) or not hasattr(UnlearnClient, f"{method}_task"):
            raise
    done[key] = task_with_progress(method, kwargs)  # the same answer, computed as a task
    return done[key]


def task_with_progress(method: str, kwargs: dict) -> Any:
    """``client.<method>_task(**kwargs)`` with a progress bar (step, total, ETA) while it runs: a
    long wait shows how far it is, not only a spinner."""
    from unlearn_core.server.client_tasks import TASK_PROGRESS
    from unlearn_core.ui.render import fmt_eta

    what = method.replace("_", " ")
    bar = st.progress(0.0, text=f"Computing {what} on the server (a task): queued…")

    def show(t: dict) -> None:
        if t["status"] == "running" and t.get("total"):
            bar.progress(
                min(1.0, t["done"] / t["total"]),
                text=f"Computing {what} on the server: step {t['done']} / {t['total']} · ETA {fmt_eta(t.get('eta_s'))}",
            )

    token = TASK_PROGRESS.set(show)
    try:
        return call(f"{method}_task", **kwargs)
    finally:
        TASK_PROGRESS.reset(token)
        bar.empty()


@st.cache_data(show_spinner=False, ttl=15, max_entries=16)
def _info(url: str, token_hash: str) -> dict:
    return call("info")


@st.cache_resource(show_spinner=False)
def task_results() -> dict:
    """Answers of tasks the app ran (the guided demo, the task fallbacks of ``cached``), shared by
    every session: key -> result; a page keys them by URL, loaded model and arguments."""
    return {}


def clear_cache() -> None:
    """Drop the app's cached server answers (after the server's data changed, e.g. a new target)."""
    _cached.clear()
    _info.clear()
    task_results().clear()
