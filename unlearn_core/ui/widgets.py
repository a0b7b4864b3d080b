"""Small Streamlit helpers the pages share: a token heat-map, tables, results that stay after a click,
PNG export."""

from __future__ import annotations

import json
import os
from typing import Any

import streamlit as st

from unlearn_core.ui import render as R


def heatmap(tokens: list[str], values: list[float], **kw) -> None:
    st.markdown(R.token_heatmap_html(tokens, values, **kw), unsafe_allow_html=True)


def table(df, column_config: dict | None = None) -> None:
    """A table as every page shows one: no index column, the page's full width."""
    st.dataframe(df, hide_index=True, width="stretch", column_config=column_config)


def stats_tokens_input(col, label: str, key: str, limits: dict, low: int = 256, value: int = 20_000, **kw):
    """A number of tokens of feature statistics per corpus (steps of 1,000), at most the server's
    ``max_stats_tokens``: the selection forms' shared input."""
    top = int(limits.get("max_stats_tokens", 200_000))
    return col.number_input(label, low, top, value, step=1000, key=key, **kw)


def once(key: str, params: Any, clicked: bool) -> bool:
    """True when the button was clicked now, or was clicked before for these same ``params`` (so
    results of slow, button-triggered work stay on screen across reruns)."""
    done = st.session_state.setdefault("_ran", {})
    sig = json.dumps(params, sort_keys=True, default=str)
    if clicked:
        done[key] = sig
    return done.get(key) == sig


def kaleido_available() -> bool:
    """PNG export needs kaleido and a Chromium it can drive (no browser download here)."""
    try:
        import kaleido  # noqa: F401
    except Exception:
        return False
    if not os.environ.get("BROWSER_PATH"):
        for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
            if os.path.exists(p):
                os.environ["BROWSER_PATH"] = p
                break
    return bool(os.environ.get("BROWSER_PATH"))
