"""Feature search: find features by text, explanation, id or forget/retain selection; see a
feature's dashboard; collect features into named feature sets."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from unlearn_core.features.descriptions import matches_query
from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import figures as FIG
from unlearn_core.ui import nav as NV
from unlearn_core.ui import page as PG
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import render as R
from unlearn_core.ui import selection_view as SV
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import url_state as US
from unlearn_core.ui import widgets as WG

info, sae = PG.tool_page("Feature search", pick_model=True)
on = PG.current_variant()  # the model the features are read on
target = TP.current_target()
meta = PK.sae_info(info, sae)
d_sae = int(meta.get("d_sae") or 1)
limits = info.get("limits", {})
EXAMPLE = (
    "Anthrax spores are inhaled, germinate in the lungs and release lethal toxin; the virus replicates in host cells."
)


@st.cache_data(show_spinner=False, ttl=3600, max_entries=128)
def np_search(query: str, model_id: str, np_sae: str) -> list[dict]:
    """Neuronpedia's explanation search (a public web service, not the engine); [] when unreachable."""
    from unlearn_core.features import neuronpedia as NP

    return NP.search_explanations(query, model_id, [np_sae])


def open_dashboard(fid: int) -> None:
    st.session_state["f"] = int(fid)


MODES_BY = ["text", "explanation", "id", "forget/retain"]
by = US.url_widget(
    st.segmented_control,
    "Search by",
    "by",
    "text",
    parse=US.one_of(MODES_BY),
    value_arg="default",
    options=MODES_BY,
    help="How to find features; the dashboard of a chosen feature is below.",
)
by = by or "text"

# ---------------------------------------------------------------- search modes
if by == "text":
    st.markdown(
        "Features active on a text. By default ranked by **specificity**: how strongly each fires here "
        "relative to its usual peak on a background corpus, times how rare its firing is there. **Dense** "
        "features (active on more than 10% of the background's tokens) say little about a text: they are "
        "flagged and listed last."
    )
    text = st.text_area("Text", value=EXAMPLE, key="search_text", height=90)
    c1, c2, c3 = st.columns(3)
    k = c1.slider("How many features", 5, 50, 15, key="k")
    rank = c2.selectbox(
        "Rank by",
        ["specificity", "max"],
        key="rank",
        format_func=lambda r: (
            "specificity (topic features first)" if r == "specificity" else "largest activation on the text"
        ),
        help="Specificity = (max activation here / the feature's max on the background, at most 2) "
        "x log2(1 / its firing frequency on the background).",
    )
    bg = c3.selectbox(
        "Background corpus",
        ["webtext", "wikitext"],
        key="bg",
        help="The features' firing statistics on this corpus (computed once, then cached on the server).",
    )
    o1, o2 = st.columns(2)
    dense_last = not o1.checkbox("Rank dense features with the others", key="dense_in_rank")
    context = not o2.checkbox(
        "Read a short text alone",
        key="word_alone",
        help="By default a word or a name (up to 16 tokens) is read inside a few neutral sentences and its "
        "activations averaged: alone, 'anthrax' is the sub-tokens 'anth' and 'rax', and the features that fire "
        "hardest on those fire on 'Anthony' too.",
    )
    if text.strip():
        opts = {"k": k, "background": bg, "rank": rank, "dense_last": dense_last, "context": context, **on}
        res = ER.attempt(
            lambda: CN.cached("search", text=text, sae=sae, **opts),
            "the feature search",
            spinner="Encoding the text…",
        )
        if res is not None:
            rows = res["features"]
            if res.get("in_context"):
                st.caption("Read in context: the activations on your text inside four neutral sentences, averaged.")
            if not rows:
                st.info("No feature fires on this text.")
            else:
                df = pd.DataFrame(rows)
                df["dense"] = df["dense"].map(lambda d: "⚠ dense" if d else "")
                df = df[["feature", "score", "max_act", "n_tokens_active", "top_token", "background_freq", "dense"]]
                df["top_token"] = df["top_token"].map(repr)
                WG.table(
                    df,
                    {
                        "score": st.column_config.NumberColumn(
                            "specificity" if rank == "specificity" else "score", format="%.3f"
                        ),
                        "max_act": st.column_config.NumberColumn("max activation", format="%.3f"),
                        "n_tokens_active": "tokens active",
                        "top_token": "strongest on",
                        "background_freq": st.column_config.NumberColumn(f"fires on (of {bg})", format="%.4f"),
                    },
                )
                n_dense = sum(1 for r in rows if r.get("dense"))
                if n_dense:
                    st.caption(
                        f"{n_dense} of these {len(rows)} features are dense (active on > 10% of {bg}'s "
                        "tokens)" + (": listed last." if dense_last else ".")
                    )
                ids = [r["feature"] for r in rows]
                c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
                pick = c1.selectbox("Feature", ids, key="pick_text")
                c2.button("Open its dashboard", key="open_text", on_click=open_dashboard, args=(pick,))
                FS.add_to_set_widget(sae, ids, key="set_text")
    else:
        st.info("Type a text (a word, a name or a passage) to see the features it activates.")

elif by == "explanation":
    st.markdown(
        "Search feature explanations. **Neuronpedia** answers when this SAE has a Neuronpedia id and "
        "Neuronpedia is reachable; otherwise the **local automatic descriptions** of the top "
        "forget/retain-selected features are searched."
    )
    np_id = meta.get("neuronpedia_id")

    def local_settings() -> tuple[int, float, int]:
        c1, c2, c3 = st.columns(3)
        n = c1.number_input("Describe the top N selected features", 5, 200, 50, step=5, key="xn")
        if target:  # the target's own selection: its method and corpora, not a threshold of this page's
            c2.caption(
                f"Selected as target **{target['name']}** selects (the sidebar): {target['selection']['method']}."
            )
            return int(n), 0.01, 0
        thr = c2.select_slider("Retain threshold", [0.5, 0.1, 0.05, 0.01, 0.005, 0.001], value=0.01, key="xthr")
        xtok = WG.stats_tokens_input(c3, "Tokens per corpus", "xtok", limits)
        return int(n), float(thr), int(xtok)

    if not np_id:
        st.info(
            "This SAE has no Neuronpedia id (a local SAE): the local automatic descriptions are searched.",
            icon=":material/cloud_off:",
        )
        settings = local_settings()
    query = st.text_input("Explanation contains", key="xq", placeholder="e.g. virus, protein, 's'")
    if query.strip():
        hits, source = [], ""
        if np_id:
            from unlearn_core.features import neuronpedia as NP

            model_id, np_sae = np_id.split("/", 1)
            with st.spinner("Asking Neuronpedia…"):
                try:
                    hits = np_search(query.strip(), model_id, np_sae) if len(query.strip()) >= 3 else []
                except ValueError as e:
                    st.error(str(e))
            if hits:
                source = f"Neuronpedia ({np_id}): human-readable explanations from neuronpedia.org"
                df = pd.DataFrame(
                    [
                        {
                            "feature": h["index"],
                            "explanation": h["description"],
                            "link": NP.feature_page_url(model_id, np_sae, h["index"]),
                        }
                        for h in hits
                    ]
                )
            else:
                st.info(
                    "Neuronpedia gave no answer (unreachable, offline, or no match): searching the local "
                    "automatic descriptions instead.",
                    icon=":material/cloud_off:",
                )
                settings = local_settings()
        if not hits:
            n, thr, xtok = settings
            # the sidebar's target: its own selection (method, corpora or questions), not the paper's WMDP-bio
            sel = ER.attempt(
                lambda: (
                    CN.cached("select_target", target=target["name"], n=n, describe=True, sae=sae, **on)
                    if target
                    else CN.cached("select", threshold=thr, n=n, n_tokens=xtok, describe=True, sae=sae, **on)
                ),
                "describing the selected features",
                spinner="Describing features (slow the first time)…",
            )
            if sel is not None:
                matched = [r for r in sel["features"] if matches_query(query, r.get("description") or "")]
                how = (
                    f"target {target['name']}'s selection, {sel.get('method', 'frequency')}"
                    if target
                    else f"selected on {sel['forget']} vs {sel['retain']}, threshold {thr:g}"
                )
                source = (
                    f"local automatic descriptions, {len(matched)} of {len(sel['features'])} features match "
                    f"(the top {len(sel['features'])}, {how}) — not Neuronpedia"
                )
                df = pd.DataFrame(
                    [
                        {
                            "feature": r["feature"],
                            "explanation": r.get("description") or "",
                            "forget freq": r["forget_freq"],
                            "retain freq": r["retain_freq"],
                        }
                        for r in matched
                    ]
                )
                hits = matched
        if source:
            st.caption(f"**Answered by:** {source}")
        if hits:
            WG.table(df, {"link": st.column_config.LinkColumn("Neuronpedia")} if "link" in df else None)
            ids = [int(x) for x in df["feature"]]
            c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
            pick = c1.selectbox("Feature", ids, key="pick_x")
            c2.button("Open its dashboard", key="open_x", on_click=open_dashboard, args=(pick,))
            FS.add_to_set_widget(sae, ids, key="set_x")
        elif source:
            st.info(
                "No explanation matches every word of the query (words of 6+ letters match by their stem: "
                "'anthrax' finds 'anthracis')."
            )

elif by == "id":
    st.markdown(f"Type a feature id (0 – {d_sae - 1}) in the dashboard below.")

else:  # forget/retain selection
    SEL_OPTS = ["target", "paper"]
    how = "paper"
    if target:
        how = (
            US.url_widget(
                st.segmented_control,
                "Selection",
                "sel",
                "target",
                parse=US.one_of(SEL_OPTS),
                value_arg="default",
                options=SEL_OPTS,
                format_func=lambda o: (
                    f"the target's ({target['name']}, its retain corpora)"
                    if o == "target"
                    else "the paper's (one retain corpus)"
                ),
                help="The target's selection compares its forget text with retain text of the same "
                "format (answer-letter and question-word features drop out) over several retain "
                "corpora; the paper's compares one forget corpus with one retain corpus.",
            )
            or "target"
        )
    if how == "target":
        SV.target_selection(target, sae, info, open_dashboard)
    else:
        st.markdown(
            "The paper's selection: drop features whose firing frequency on the **retain** corpus is at or "
            "above the threshold, rank the rest by their frequency on the **forget** corpus, keep the top N."
        )
        corpora = [c for c in info.get("corpora", []) if "<" not in c]
        c1, c2, c3, c4 = st.columns(4)
        forget = c1.selectbox("Forget corpus", ["wmdp-bio-text@train", *corpora], key="forget")
        retain = c2.selectbox("Retain corpus", ["wikitext@train", *corpora], key="retain")
        thr_opts = [0.5, 0.1, 0.05, 0.01, 0.005, 0.001]
        thr = US.url_widget(
            c3.select_slider, "Retain threshold", "thr", 0.01, parse=US.one_of(thr_opts), options=thr_opts
        )
        max_n = int(limits.get("max_features", 512))
        n = US.url_widget(
            c4.number_input, "N features", "n", 20, parse=US.int_in(1, max_n), min_value=1, max_value=max_n
        )
        c1, c2 = st.columns(2)
        ntok = WG.stats_tokens_input(
            c1,
            "Tokens per corpus",
            "sel_tokens",
            limits,
            help="Statistics are cached on the server after the first run.",
        )
        describe = c2.checkbox("Add automatic descriptions", key="describe")
        params = dict(
            forget=forget, retain=retain, threshold=thr, n=int(n), n_tokens=int(ntok), describe=describe, sae=sae, **on
        )
        clicked = st.button("Run the selection", type="primary", key="run_sel")
        if WG.once("select", params, clicked):
            sel = ER.attempt(
                lambda: CN.cached("select", **params),
                "the forget/retain selection",
                spinner="Computing feature statistics on both corpora (minutes the first time on CPU)…",
            )
            if sel is not None:
                rows = sel["features"]
                if not rows:
                    st.warning(f"No feature fires on less than {thr:g} of the retain tokens: raise the threshold.")
                else:
                    df = pd.DataFrame(rows)
                    if not describe:
                        df = df.drop(columns=["description"], errors="ignore")
                    WG.table(
                        df,
                        SV.frequency_columns("retain frequency"),
                    )
                    st.caption(
                        f"{len(rows)} features, {sel['n_tokens']} tokens per corpus. Click a column header to sort."
                    )
                    ids = [r["feature"] for r in rows]
                    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
                    pick = c1.selectbox("Feature", ids, key="pick_sel")
                    c2.button("Open its dashboard", key="open_sel", on_click=open_dashboard, args=(pick,))
                    FS.add_to_set_widget(sae, ids, key="set_sel")

# ---------------------------------------------------------------- dashboard
st.divider()
st.header("Feature dashboard")
c1, c2, c3 = st.columns(3)
f = US.url_widget(
    c1.number_input,
    "Feature id",
    "f",
    None,
    parse=US.int_in(0, d_sae - 1),
    min_value=0,
    max_value=d_sae - 1,
    placeholder="type an id…",
)
max_tok = int(limits.get("max_stats_tokens", 200_000))
ntok = US.url_widget(
    c2.number_input,
    "Tokens per corpus",
    "ntok",
    20_000,
    parse=US.int_in(256, max_tok),
    min_value=256,
    max_value=max_tok,
    step=1000,
    help="Sample used for examples and histograms; computed once per corpus on the server, then cached.",
)
forget_text = TP.selection_corpus(target) if target else "wmdp-bio-text"
second_opts = list(
    dict.fromkeys(
        [forget_text, "wmdp-bio-text", *[c for c in info.get("corpora", []) if "<" not in c and c != "webtext"]]
    )
)
second = US.url_selectbox(
    "Next to WebText",
    second_opts,
    key="dash2",
    container=c3,
    format_func=lambda c: f"{c} ({target['name']} forget corpus)" if target and c == forget_text else c,
    help="The second corpus of the dashboard: the target's forget corpus by default; "
    "wmdp-bio-text is the paper's stand-in for the gated WMDP-bio forget corpus.",
)
if f is None:
    st.info("Pick a feature above, or type an id, to see its dashboard.")
    st.stop()
f = int(f)
d = ER.attempt(
    lambda: CN.cached("dashboard", feature=f, sae=sae, n_tokens=int(ntok), k=6, corpora=["webtext", second], **on),
    f"the dashboard of feature {f}",
    spinner="Building the dashboard (slow the first time per corpus)…",
)
if d is None:
    st.stop()

st.subheader(f"Feature {f} of {sae}")
npd = d.get("neuronpedia") or {}
if npd.get("available") and npd.get("explanations"):
    st.markdown("**Neuronpedia explanation:** " + " · ".join(f"“{e}”" for e in npd["explanations"][:3]))
    if npd.get("url"):
        st.markdown(f"[Open on Neuronpedia]({npd['url']})")
else:
    desc = d.get("description", "").removeprefix("[automatic]").strip()
    st.markdown(
        f"**Automatic description** *(made locally from the max-activating contexts, not a human or "
        f"Neuronpedia explanation)*: {desc}"
    )
    if npd.get("message"):
        st.caption(f"Neuronpedia: {npd['message']}")
FS.add_to_set_widget(sae, [f], key="set_dash")
links = st.columns(2)
with links[0]:
    NV.page_link("clamp", f"Clamp feature {f}", icon=NV.ICONS["clamp"], query_params={"features": str(f)})
with links[1]:
    NV.page_link(
        "tokens", f"Highlight feature {f} on a question", icon=NV.ICONS["tokens"], query_params={"features": str(f)}
    )

corpora = d["corpora"]
vmax = max([c["max_act"] for c in corpora.values()] + [1e-9])
cols = st.columns(len(corpora))
for col, (name, c) in zip(cols, corpora.items()):
    with col:
        label = {"webtext": "WebText", "wmdp-bio-text": "WMDP-bio"}.get(name, name)
        if target and name == forget_text and name not in ("webtext", "wmdp-bio-text"):
            label = f"{target['name']} forget text"
        st.markdown(f"#### {label} (`{name}`)")
        m = st.columns(3)
        m[0].metric("fires on", f"{c['freq']:.2%}")
        m[1].metric("max", f"{c['max_act']:.3g}")
        m[2].metric("mean when active", f"{c['mean_active']:.3g}")
        st.caption(f"{c['n_tokens']} tokens sampled")
        ex = c["examples"]
        if not ex["top"]:
            st.info("Never fires on this sample.")
        for e in ex["top"]:
            WG.heatmap(e["tokens"], e["values"], vmax=vmax, peak=e["peak"], label=f"max {e['max']:.3f}")
        for band in ex.get("quantiles", [])[:2]:
            st.caption(f"Examples with max in [{band['range'][0]:.3g}, {band['range'][1]:.3g}]")
            for e in band["examples"]:
                WG.heatmap(e["tokens"], e["values"], vmax=vmax, peak=e["peak"])
st.markdown(R.legend_html(vmax), unsafe_allow_html=True)

c1, c2 = st.columns([3, 2])
with c1:
    st.plotly_chart(FIG.activation_hist(d["bin_edges"], {n: c["hist"] for n, c in corpora.items()}), key="hist")
with c2:
    lt, lb = d["logits"]["top"], d["logits"]["bottom"]
    lens = pd.DataFrame(
        {
            "promotes": [R.token_label(t) for t, _ in lt],
            "+": [v for _, v in lt],
            "suppresses": [R.token_label(t) for t, _ in lb],
            "−": [v for _, v in lb],
        }
    )
    cfg = {"+": st.column_config.NumberColumn(format="%.3f"), "−": st.column_config.NumberColumn(format="%.3f")}
    if d.get("logit_lens_meaningful", True):
        st.markdown("**Logit lens** (what the feature's decoder direction promotes / suppresses)")
        WG.table(lens, cfg)
    else:
        st.markdown(
            "**What it is about:** the examples and the description above. The logit lens is left out: "
            f"this SAE reads layer {meta.get('layer')} of the model, and the direct effect of an early "
            "layer's direction on the output is mostly noise."
        )
        with st.expander("Logit lens anyway (mostly noise this early)"):
            WG.table(lens, cfg)
