"""Navigation: the page list, links between pages, and the page setup with its sidebar menu."""

from __future__ import annotations

import re

import streamlit as st

from unlearn_core.core.paths import ASSETS

# (key, path, title, icon) of every page, in menu order; paths are relative to app.py
PAGE_LIST = [
    ("home", "app.py", "Home", ":material/home:"),
    ("search", "pages/1_Feature_search.py", "Feature search", ":material/search:"),
    ("tokens", "pages/2_Token_highlighting.py", "Token highlighting", ":material/ink_highlighter:"),
    ("clamp", "pages/3_Clamp_explorer.py", "Clamp explorer", ":material/tune:"),
    ("batch", "pages/4_Batch_evaluation.py", "Batch evaluation", ":material/balance:"),
    ("robust", "pages/5_Robustness.py", "Robustness", ":material/shield:"),
]
PAGES = {k: p for k, p, _, _ in PAGE_LIST}
ICONS = {k: i for k, _, _, i in PAGE_LIST}


def page_link(page: str, label: str, icon: str | None = None, query_params: dict | None = None) -> None:
    """``st.page_link`` to one of :data:`PAGES` (a key or a path). When the page runs on its own
    (not under ``app.py``, e.g. in a test), Streamlit knows no other page: a plain link is shown."""
    from streamlit.errors import StreamlitPageNotFoundError

    path = PAGES.get(page, page)
    try:
        st.page_link(path, label=label, icon=icon, query_params=query_params or None)
    except StreamlitPageNotFoundError:
        from urllib.parse import urlencode

        name = "" if path == "app.py" else re.sub(r"^\d+_", "", path.rsplit("/", 1)[-1].removesuffix(".py"))
        qs = ("?" + urlencode(query_params)) if query_params else ""
        st.markdown(f"{icon or ''} [{label}](/{name}{qs})")


def page_setup(title: str) -> None:
    """Page config and the sidebar menu (Streamlit's own page list is switched off in
    ``.streamlit/config.toml``: it would call the home page "app").

    The favicon is a file shipped in the package, served by the app: a ``:material/…:`` icon
    would be fetched from fonts.gstatic.com (errors offline). The CSS lets metric cards and
    sidebar labels wrap instead of being cut off with an ellipsis in narrow columns."""
    icon = str(ASSETS / "favicon.png")
    st.set_page_config(page_title=f"{title} · SAE Unlearning Workbench", page_icon=icon, layout="wide")
    st.html(
        "<style>"
        "[data-testid='stMetricValue'] *, [data-testid='stMetricLabel'] *, "
        "[data-testid='stSidebar'] [data-testid='stPageLink'] *, "
        "[data-testid='stSidebar'] [data-testid='stWidgetLabel'] * "
        "{white-space: normal !important; overflow-wrap: anywhere; text-overflow: clip !important;}"
        "[data-testid='stMetricValue'] {line-height: 1.15;}"
        "</style>"
    )
    with st.sidebar:
        for key, _path, label, icon in PAGE_LIST:
            page_link(key, label, icon)
        st.divider()
