"""The unlearning target every page works on: the sidebar's picker and what pages read from it."""

from __future__ import annotations

import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import url_state as US

MAX_C = 1000  # the clamp value range of the app's sliders and links: up to the targets' defaults (bio-basics: 800)
from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402  (the one definition)


def targets() -> dict[str, dict]:
    """The server's unlearning targets by name (GET /api/targets, cached); {} when unavailable."""
    try:
        return {t["name"]: t for t in CN.cached("targets")["targets"]}
    except Exception as e:  # the pages still work without targets; say why once, in the sidebar
        st.sidebar.warning(f"No unlearning targets: {getattr(e, 'message', e)}", icon=":material/warning:")
        return {}


def targets_changed() -> None:
    """After a target was created or deleted: drop the app's cached server answers (the target
    list, and anything read under a target's name or its files, e.g. one defined again)."""
    CN.clear_cache()


def select_target_next_run(name: str) -> None:
    """Make ``name`` the sidebar's target on the next run (the picker exists already on this one)."""
    st.session_state["_pick_target"] = name


def clamp_c(c: float) -> int:
    """A target's clamp value as the Clamp explorer's slider takes it (an int in 0..MAX_C)."""
    return int(round(min(max(float(c), 0), MAX_C)))


def target_picker() -> dict | None:
    """The unlearning target every page works on, in the sidebar (``?target=``, default
    bio-basics), with its description. Returns the target (a dict from /api/targets) or None."""
    ts = targets()
    st.session_state["_target_info"] = None
    if not ts:
        return None
    pick = st.session_state.pop("_pick_target", None)
    if pick in ts:  # just defined in the app (select_target_next_run)
        st.session_state["target"] = pick
        US.shared()["target"] = pick
    names = sorted(ts, key=lambda n: (n != DEFAULT_TARGET, n))  # the default first: url_selectbox's default
    with st.sidebar:
        name = US.url_selectbox(
            "Unlearning target",
            names,
            key="target",
            help="What to forget and what to keep: its forget and retain corpora and question "
            "sets, and its default intervention. Every page starts from it.",
        )
        t = ts[name]
        st.caption(t["description"])
    st.session_state["_target_info"] = t
    return t


def current_target() -> dict | None:
    """The target chosen in the sidebar on this run (set by :func:`target_picker`)."""
    return st.session_state.get("_target_info")


def selection_corpus(t: dict) -> str:
    """The corpus the server selects the target's features on (its own, or the labelled fallback)."""
    return t.get("resolved_forget_corpus") or t["forget_corpus"]
