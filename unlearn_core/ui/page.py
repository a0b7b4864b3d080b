"""The opening every page shares: the server check in the sidebar and the tool pages' pickers."""

from __future__ import annotations

import hashlib

import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import nav as NV
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import target_picker as TP


def require_server() -> dict:
    """The server's /api/info, with a status line in the sidebar; stops the page when the server is
    missing, loading or failing (after saying why and what to do)."""
    url = CN.server_url()
    client = CN.get_client()
    try:
        health = CN.call("health")
    except Exception as e:
        ER.show_error(e, "the health check")
        st.stop()
    if health["status"] in ("loading", "error"):
        _say_why_not_ready(url, health)
        st.stop()
    try:
        info = CN._info(url, hashlib.sha256((client.token or "").encode()).hexdigest())
    except Exception as e:
        ER.show_error(e, "reading the server's info")
        st.stop()
    st.session_state["_engine_sig"] = f"{info.get('model')}|{info.get('dtype')}|" + ",".join(
        s["key"] for s in info.get("saes", [])
    )
    with st.sidebar:
        saes = ", ".join(s["key"] for s in info.get("saes", [])) or "none"
        st.markdown(
            f":green[●] **Server** `{url}`  \nmodel **{info.get('model')}** · SAE **{saes}** · "
            f"{info.get('device')} / {info.get('dtype')}"
        )
    return info


def _say_why_not_ready(url: str, health: dict) -> None:
    """A loading server: say so and wait for it here; a failed one: its reason and what to do."""
    if health["status"] == "loading":
        up = f"up {health['uptime_s']:.0f} s"
        st.info(f"The server at `{url}` is loading its model ({up}). " + LOADING, icon=":material/hourglass_top:")
        _wait_for_model()
    else:
        why = health.get("detail") or "unknown error"
        st.error(f"The server at `{url}` failed to load its model: {why}. " + FAILED, icon=":material/error:")


LOADING = "This page continues by itself once it is ready."
FAILED = "Check its log, fix the settings and restart it."


@st.fragment(run_every=3)
def _wait_for_model() -> None:
    try:
        if CN.call("health")["status"] != "loading":
            st.rerun(scope="app")
    except Exception:
        pass


def tool_page(title: str, pick_model: bool = False) -> tuple[dict, str]:
    """The opening every tool page shares: setup, title, server check, SAE picker, feature sets
    (and with ``pick_model``, the model picker: ``current_variant()``).

    Returns the server's info and the chosen SAE key (require_server stops the page when the
    server cannot be reached)."""
    NV.page_setup(title)
    st.title(title)
    info = require_server()
    TP.target_picker()
    sae = PK.sae_picker(info)
    st.session_state["_variant"] = PK.model_picker() if pick_model else "base"
    FS.feature_sets_sidebar(sae, (PK.sae_keys(info) or [sae])[0])
    return info, sae


def current_variant() -> dict:
    """``{"variant": name}`` for a request on the page's model, {} on the model as loaded (the
    app's cache keys of base requests stay as they were)."""
    v = st.session_state.get("_variant", "base")
    return {} if v == "base" else {"variant": v}
