"""The sidebar's SAE and model pickers, and what they read from the server's info."""

from __future__ import annotations

import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import url_state as US


def mode_labels() -> dict[str, str]:
    from unlearn_core.method.modes import MODE_LABELS

    return MODE_LABELS


def mode_short() -> dict[str, str]:
    """Short mode names, for select boxes and figure titles (the long labels go in help texts)."""
    from unlearn_core.method.modes import MODE_SHORT

    return MODE_SHORT


def sae_keys(info: dict) -> list[str]:
    return [s["key"] for s in info.get("saes", [])]


def sae_info(info: dict, key: str) -> dict:
    return next((s for s in info.get("saes", []) if s["key"] == key), {})


def sae_picker(info: dict, label: str = "SAE") -> str:
    keys = sae_keys(info)

    def fmt(k: str) -> str:
        s = sae_info(info, k)
        return f"{k} (layer {s.get('layer')}, {s.get('d_sae')} features, {s.get('hook_name')})"

    return US.url_selectbox(
        label,
        keys,
        key="sae",
        format_func=fmt,
        disabled=len(keys) == 1,
        help="Which SAE's features; its hook point comes from the SAE itself.",
    )


@st.cache_data(show_spinner=False, ttl=10, max_entries=8)
def _finished_variants(url: str, engine_sig: str) -> list[str]:
    runs = CN.call("rmu_runs") + CN.call("persist_runs")
    return [r["variant"] for r in runs if r["status"] == "done"]


VARIANT_WORDS = {"rmu": "RMU fine-tuned", "persist": "persistent SAE-guided edit"}


def model_picker() -> str:
    """The model a page reads features on: 'base' (the model as loaded) or a finished RMU run
    ('rmu:<name>', in place of it); in ``?model=``. No picker while the server has no finished run."""
    try:
        opts = ["base", *_finished_variants(CN.server_url(), st.session_state.get("_engine_sig", ""))]
    except Exception:  # noqa: BLE001 - an older server without RMU: the model as loaded
        opts = ["base"]
    if len(opts) == 1:
        return "base"
    value = US.url_selectbox(
        "Model",
        opts,
        key="model",
        format_func=lambda v: "the model as loaded" if v == "base" else f"{v} ({VARIANT_WORDS[v.split(':')[0]]})",
        help="Read the SAE's features on a fine-tuned model (a finished run of the Batch evaluation "
        "page's RMU or persistent panel) in place of the model as loaded: how fine-tuning moved them.",
    )
    if value != "base":
        st.caption(f":orange[●] Every number on this page is on **{value}**, not on the model as loaded.")
    return value
