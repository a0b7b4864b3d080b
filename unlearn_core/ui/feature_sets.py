"""Feature sets: named collections of feature ids kept in one browser session.

They live in ``st.session_state`` and travel in ``?sets=``; the pages put the feature ids
themselves in the URL (``?features=``).
"""

from __future__ import annotations

import streamlit as st

from unlearn_core.ui import nav as NV
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import render as R
from unlearn_core.ui import url_state as US


def feature_sets() -> dict[str, list[dict]]:
    """name -> [{"sae": key, "feature": id}], for this browser session."""
    return st.session_state.setdefault("feature_sets", {})


def add_to_set(name: str, sae: str, features: list[int]) -> int:
    name = R.clean_set_name(name)
    items = feature_sets().setdefault(name, [])
    have = {(i["sae"], i["feature"]) for i in items}
    added = 0
    for f in features:
        if (sae, int(f)) not in have:
            items.append({"sae": sae, "feature": int(f)})
            have.add((sae, int(f)))
            added += 1
    st.session_state["fs_last"] = name
    return added


def set_items(name: str) -> list[tuple[str, int]]:
    return [(i["sae"], int(i["feature"])) for i in feature_sets().get(name, [])]


def add_to_set_widget(sae: str, features: list[int], key: str, label: str | None = None) -> None:
    """A set-name box and an 'add' button for ``features`` (of SAE ``sae``)."""
    if not features:
        return
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    name = c1.text_input(
        "Feature set",
        value=st.session_state.get("fs_last", "my set"),
        key=f"{key}_name",
        help="A named collection kept in this browser session, used by the other pages.",
    )
    n = len(features)
    text = label or (f"Add feature {features[0]} to “{name}”" if n == 1 else f"Add {n} features to “{name}”")

    def add() -> None:  # a callback, so the sidebar's list of sets is up to date in the same run
        set_name = st.session_state.get(f"{key}_name") or "my set"
        added = add_to_set(set_name, sae, features)
        st.toast(
            f"{added} feature(s) added to “{set_name.strip() or 'my set'}”"
            + (f" ({n - added} already there)" if added < n else "")
        )

    c2.button(text, key=f"{key}_add", on_click=add)


def _sync_sets_url(base_sae: str) -> None:
    """Feature sets live in ``?sets=`` too, so they survive a reload and travel with a link.

    Read once per browser session (merged into the session's sets), written on every run."""
    sets = feature_sets()
    if not st.session_state.get("_sets_loaded"):
        st.session_state["_sets_loaded"] = True
        raw = st.query_params.get("sets")
        if raw:
            try:
                for name, items in R.decode_feature_sets(raw, base_sae).items():
                    sets.setdefault(name, [{"sae": s, "feature": f} for s, f in items])
            except ValueError as e:
                st.sidebar.warning(
                    f"The link's feature sets (`sets=`) could not be read: {e}", icon=":material/link_off:"
                )
    enc = R.encode_feature_sets({n: set_items(n) for n in sets}, base_sae)
    US.write_url("sets", enc or None)


def feature_sets_sidebar(default_sae: str | None = None, base_sae: str | None = None) -> None:
    """The session's feature sets, with links that open them in the clamp explorer."""
    _sync_sets_url(base_sae or default_sae or "")
    sets = feature_sets()
    with st.sidebar.expander(f"Feature sets ({len(sets)})", expanded=bool(sets)):
        if not sets:
            st.caption("None yet: add features from Feature search or Token highlighting.")
        for name in list(sets):
            items = set_items(name)
            ids = R.format_feature_list(items, default_sae or "")
            st.markdown(f"**{name}** ({len(items)}): `{R.short(ids, 60) or '—'}`")
            c1, c2 = st.columns(2)
            with c1:
                NV.page_link("clamp", "Clamp these", NV.ICONS["clamp"], {"features": ids} if ids else None)
            if c2.button("Delete", key=f"fs_del_{name}"):
                sets.pop(name, None)
                st.rerun()


def features_input(info: dict, sae: str, key: str = "features") -> list[tuple[str, int]]:
    """Feature ids typed in (bound to the URL) or loaded from a feature set; parsed and checked."""
    sets = feature_sets()
    if sets:

        def load() -> None:
            pick = st.session_state.get("fs_pick")
            if pick and pick in sets:
                st.session_state[key] = R.format_feature_list(set_items(pick), sae)

        st.selectbox(
            "Load a feature set",
            [None, *sets],
            key="fs_pick",
            on_change=load,
            format_func=lambda n: "— choose —" if n is None else f"{n} ({len(sets[n])} features)",
        )
    text = US.url_widget(
        st.text_input,
        "Feature ids",
        key,
        "",
        placeholder="e.g. 12, 40, 7",
        help="Comma-separated ids of the selected SAE; `SAE_KEY:ID` for another SAE.",
    )
    try:
        items = R.parse_feature_list(text, sae)
    except ValueError as e:
        st.error(str(e))
        return []
    for s, f in items:
        meta = PK.sae_info(info, s)
        if not meta:
            st.error(f"Unknown SAE {s!r} in the feature ids; loaded: {', '.join(PK.sae_keys(info))}")
            return []
        if f >= meta.get("d_sae", 0):
            st.error(f"Feature {f} is out of range for SAE {s!r} ({meta.get('d_sae')} features).")
            return []
    limit = info.get("limits", {}).get("max_features", 512)
    if len(items) > limit:
        st.error(f"At most {limit} features at once (the server's limit); got {len(items)}.")
        return []
    return items
