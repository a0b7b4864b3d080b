"""Token highlighting: a question (or any text) token by token, coloured by the chosen features,
and the top features of any token."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import nav as NV
from unlearn_core.ui import page as PG
from unlearn_core.ui import questions as QS
from unlearn_core.ui import render as R
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import url_state as US
from unlearn_core.ui import widgets as WG

info, sae = PG.tool_page("Token highlighting", pick_model=True)

src = (
    US.url_widget(
        st.segmented_control,
        "Text",
        "src",
        "question",
        parse=US.one_of(["question", "own text"]),
        value_arg="default",
        options=["question", "own text"],
    )
    or "question"
)
q = None
if src == "question":
    q, _qs = QS.question_picker(info, target=TP.current_target())
    if q is None:
        st.stop()
    text = R.question_text(q)
    with st.expander("The question and its correct answer", expanded=True):
        QS.show_question(q)
else:
    text = st.text_area(
        "Text", key="own_text", height=120, value="The spores of Bacillus anthracis survive for decades in soil."
    )
    if not text.strip():
        st.info("Paste or type a text.")
        st.stop()

items = FS.features_input(info, sae)
feats = [f for s, f in items if s == sae]
if len(feats) < len(items):
    st.caption("Only features of the selected SAE are highlighted here.")
top_k = st.slider("Top features per token", 3, 20, 8, key="top_k")

acts = ER.attempt(
    lambda: CN.cached("activations", text=text, sae=sae, features=feats, top_k=top_k, **PG.current_variant()),
    "the activations",
    spinner="Encoding the text…",
)
if acts is None:
    st.stop()
tokens = acts["tokens"]
values = acts["values"]  # [token][feature]

st.subheader("Heat map")
if feats:
    combined = [max(row) if row else 0.0 for row in values]
    vmax = max([abs(v) for row in values for v in row] + [1e-9])
    WG.heatmap(
        tokens,
        combined,
        vmax=vmax,
        skip_first=True,
        label=f"max over the {len(feats)} chosen feature(s)" if len(feats) > 1 else f"feature {feats[0]}",
    )
    if len(feats) > 1:
        with st.expander(f"Each feature separately ({min(len(feats), 12)} of {len(feats)})", expanded=len(feats) <= 4):
            for j, fid in enumerate(feats[:12]):
                WG.heatmap(tokens, [row[j] for row in values], vmax=vmax, skip_first=True, label=f"feature {fid}")
    st.markdown(R.legend_html(vmax), unsafe_allow_html=True)
    n_active = sum(1 for v in combined[1:] if v > 0)
    st.caption(
        f"{n_active} of {len(tokens) - 1} tokens have at least one chosen feature active: a clamp on these "
        "features changes the model only at those positions."
    )
else:
    # no features chosen: colour each token by its strongest feature
    strongest = [row[0][1] if row else 0.0 for row in acts["top_features"]]
    WG.heatmap(
        tokens, strongest, skip_first=True, label="strongest feature at each token (choose features to highlight them)"
    )
    st.markdown(R.legend_html(max(strongest + [1e-9]), "strongest activation"), unsafe_allow_html=True)

st.subheader("Top features of one token")
positions = list(range(1, len(tokens))) or [0]
default_pos = max(positions, key=lambda i: acts["top_features"][i][0][1] if acts["top_features"][i] else 0.0)
if st.session_state.get("pos") not in positions:
    st.session_state["pos"] = default_pos
pos = st.select_slider("Token", positions, key="pos", format_func=lambda i: f"{i}: {tokens[i]!r}")
st.markdown(
    "Context: "
    + R.token_heatmap_html(
        tokens[max(0, pos - 12) : pos + 6],
        [1.0 if i == pos else 0.0 for i in range(max(0, pos - 12), pos + 6) if i < len(tokens)],
        vmax=1.0,
    ),
    unsafe_allow_html=True,
)
top = acts["top_features"][pos]
if not top:
    st.info("No feature is active at this token.")
else:
    df = pd.DataFrame([{"feature": f, "activation": v, "chosen": "✓" if f in feats else ""} for f, v in top])
    WG.table(
        df,
        {
            "activation": st.column_config.ProgressColumn(
                format="%.3f", min_value=0.0, max_value=float(max(v for _, v in top))
            )
        },
    )
    ids = [f for f, _ in top]
    FS.add_to_set_widget(sae, ids, key="set_tok", label=f"Add these {len(ids)} features to the set")
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    pick = c1.selectbox("Feature", ids, key="tok_pick")
    with c2:
        NV.page_link(
            "search",
            f"Open the dashboard of feature {pick}",
            icon=NV.ICONS["search"],
            query_params={"f": str(pick), "by": "id"},
        )
if q is not None:
    st.success(f"Correct answer: **{R.LETTERS[q['answer']]}. {q['choices'][q['answer']]}**")
