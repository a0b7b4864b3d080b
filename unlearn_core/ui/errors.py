"""Error display: every failed server call is explained with what to do about it, never a traceback."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import streamlit as st

from unlearn_core.server.client import ServerError, ServerUnavailableError
from unlearn_core.ui import connection as CN


def how_to_start_md(url: str) -> str:
    return (
        f"**No workbench server answers at `{url}`.**\n\n"
        "Start one in a terminal, from the repository folder:\n\n"
        "```bash\n"
        "bash scripts/run.sh                      # server + this app, in one command\n"
        ".venv/bin/python -m unlearn_core serve   # only the server (the real model)\n"
        ".venv/bin/python -m unlearn_core serve --tiny   # tiny test backend, starts in seconds\n"
        "```\n"
        "To use a server on another machine, set `UNLEARN_SERVER_URL` (and `UNLEARN_TOKEN` if it "
        "needs one) before starting the app, or start it with `bash scripts/run.sh --remote URL`. "
        "Then press **Retry**."
    )


def show_error(e: BaseException, what: str = "the request") -> None:
    """Explain a failure and what to do about it (never a traceback)."""
    if isinstance(e, ServerUnavailableError):
        st.error(how_to_start_md(CN.server_url()), icon=":material/power_off:")
        st.caption(f"Details: {e}")
        st.button("Retry", key=f"retry_{hashlib.md5(str(e).encode()).hexdigest()[:8]}_{time.time_ns()}")
    elif isinstance(e, ServerError):
        if e.status == 401:
            st.error(
                "The server needs a token: set `UNLEARN_TOKEN` to the server's token before starting the "
                f"app. ({e.message})",
                icon=":material/lock:",
            )
        elif e.status == 503:
            st.warning(
                f"The server is still loading its model; try again in a moment. ({e.message})",
                icon=":material/hourglass_top:",
            )
        elif e.status == 500:
            st.error(
                f"The server failed on {what} (internal error {e.status}); the details are in the server's "
                "log (`cache/server.log` when started by `scripts/run.sh`). Try other inputs, or restart the "
                "server.",
                icon=":material/error:",
            )
        else:
            st.error(f"The server rejected {what} ({e.status}): {e.message}", icon=":material/warning:")
    elif isinstance(e, (ValueError, KeyError)):
        st.error(f"Invalid input for {what}: {e}", icon=":material/warning:")
    elif isinstance(e, TimeoutError):
        st.error(f"{what.capitalize()} took too long: {e}", icon=":material/timer:")
    else:
        st.error(f"Unexpected problem with {what}: {type(e).__name__}: {e}", icon=":material/warning:")


def attempt(fn: Callable[[], Any], what: str, spinner: str | None = None) -> Any:
    """Run ``fn`` (a server call); on failure show the error and return None."""
    try:
        if spinner:
            with st.spinner(spinner):
                return fn()
        return fn()
    except Exception as e:  # every failure is shown, none is raised into Streamlit's traceback box
        show_error(e, what)
        return None
