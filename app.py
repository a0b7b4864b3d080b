"""SAE Unlearning Workbench: the Streamlit app's home page (`streamlit run app.py`).

The other pages are the files in ``pages/`` (Streamlit's multipage layout; the sidebar menu is
drawn by ``unlearn_core.ui.nav.page_setup``, see ``.streamlit/config.toml``). Every page is a
thin view over the workbench server (``python -m unlearn_core serve``): the server URL comes
from ``UNLEARN_SERVER_URL`` (default http://127.0.0.1:8765) and its token from ``UNLEARN_TOKEN``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import demo_view as DV
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import nav as NV
from unlearn_core.ui import page as PG
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import render as R
from unlearn_core.ui import target_form as TF
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import widgets as WG

NV.page_setup("Home")
st.title("SAE Unlearning Workbench")
st.markdown(
    "Remove knowledge from a language model by **clamping sparse-autoencoder (SAE) features**: at one layer, "
    "every selected feature that is active (> 0) is set to **−c**; everything the SAE does not explain is "
    "kept, so the model is untouched wherever none of the features fires. This app shows which features to "
    "pick, what clamping them does to the answers, and what it costs elsewhere."
)

info = PG.require_server()
target = TP.target_picker()
sae0 = PK.sae_keys(info)[0] if info.get("saes") else ""
FS.feature_sets_sidebar(sae0)

if info.get("model") == "tiny":
    st.info(
        "This server runs the **tiny test backend** (a random 2-layer model and SAE): every page works, "
        "but the numbers mean nothing. Start `python -m unlearn_core serve` for the real model.",
        icon=":material/science:",
    )

# ---------------------------------------------------------------- guided demo
st.header("A guided demo")
DV.demo_section(target, info)
TF.define_target_section(info, target)
st.subheader("Then explore it in six steps")
steps = [
    (
        "search",
        "1. Pick a topic",
        ":material/search:",
        "Run the target's forget/retain selection, or search features by a text about the topic; open a "
        "feature's dashboard to see where it fires (WebText next to the target's forget corpus).",
    ),
    (
        "tokens",
        "2. See its features",
        ":material/ink_highlighter:",
        "Highlight a question token by token with the chosen features, and look at each token's top features. "
        "Add the ones that matter to a feature set.",
    ),
    (
        "clamp",
        "3. Clamp them",
        ":material/tune:",
        "Pick a question and your feature set (or the target's default features), choose a mode and move the "
        "clamp slider.",
    ),
    (
        "clamp",
        "4. Watch the answer change",
        ":material/trending_down:",
        "The A/B/C/D probabilities with and without the clamp, the probability-vs-c curve, and generations.",
    ),
    (
        "batch",
        "5. See the side effects",
        ":material/balance:",
        "Run a sweep over thresholds, feature counts and clamp values on the target: forget accuracy against "
        "retain accuracy on known questions, loss added, and the unlearning score.",
    ),
    (
        "robust",
        "6. Try to get it back",
        ":material/shield:",
        "Attack every defence: reworded and few-shot questions, filler text, free text, and fine-tuning with the "
        "weights in hand. How much of what was forgotten comes back, fact by fact.",
    ),
]
for page, label, icon, text in steps:
    col1, col2 = st.columns([1, 3], vertical_alignment="center")
    with col1:
        NV.page_link(page, label, icon=icon)
    col2.markdown(text)

# ---------------------------------------------------------------- what is loaded
st.header("What is loaded")
c = st.columns([2, 1.2, 0.8, 0.8, 1])  # the model's name gets room: "gemma-3-270m" wrapped in a fifth of the row
model = str(info.get("model"))
embedded = model.startswith("embedded:")  # 'embedded:gemma-3-270m' would not fit a fifth of the row
c[0].metric("Model (embedded)" if embedded else "Model", model.removeprefix("embedded:"), help=f"`{model}`")
c[1].metric("Layers × d_model", f"{info.get('n_layers')} × {info.get('d_model')}")
c[2].metric("Device", str(info.get("device")))
c[3].metric("dtype", str(info.get("dtype")))
c[4].metric("Context", f"{info.get('n_ctx')} tokens")

saes = pd.DataFrame(
    [
        {
            "SAE": s["key"],
            "hook": s.get("hook_name"),
            "layer": s.get("layer"),
            "features": s.get("d_sae"),
            "d_in": s.get("d_in"),
            "architecture": s.get("architecture"),
            "source": s.get("source"),
            "release / id": " / ".join(x for x in (s.get("release"), s.get("sae_id")) if x) or "—",
            "Neuronpedia": s.get("neuronpedia_id") or "— (no public explanations)",
        }
        for s in info.get("saes", [])
    ]
)
WG.table(saes)
st.caption(
    f"Questions are scored by **{info.get('scoring')}** scoring with the **{info.get('prompt_format')}** "
    "prompt format. Interventions available: "
    + "; ".join(f"`{m}` = {PK.mode_labels().get(m, m)}" for m in info.get("modes", []))
    + "."
)

# ---------------------------------------------------------------- data sources
st.header("Data sources")
src = info.get("data_sources", {})
rows = [{"source": k, "provided by": R.source_kind(v), "where": v} for k, v in src.items()]
if rows:
    WG.table(pd.DataFrame(rows))
wmdp = ER.attempt(lambda: CN.cached("questions", set="wmdp-bio", limit=1), "the WMDP-bio question set")
if wmdp is not None:
    if wmdp.get("is_fallback"):
        st.warning(
            f"**{wmdp['label']}** — WMDP-bio itself is not available on the server, so "
            f"{wmdp['total']} MMLU biology questions stand in for it wherever 'wmdp-bio' appears.",
            icon=":material/inventory_2:",
        )
    else:
        st.success(
            f"WMDP-bio questions: real data ({wmdp['total']} questions from `{wmdp['origin']}`).",
            icon=":material/check_circle:",
        )
if target is not None:
    retain = ", ".join(f"`{c}`" for c in target["retain_corpora"])
    how = (
        f"the default features are {R.selection_summary(target, TP.selection_corpus(target))}; the "
        f"frequency tables rank `{TP.selection_corpus(target)}` (forget) against {retain}"
        if target["selection"].get("method") == "search"
        else f"they are selected on `{TP.selection_corpus(target)}` (forget) against {retain}"
    )
    st.caption(
        f"Features depend on the target (sidebar). For **{target['name']}** {how} (retain; format-matched "
        "text, and a feature's retain frequency is its highest over these corpora)."
        + (f" {target['forget_corpus_note']}." if target.get("forget_corpus_note") else "")
        + " WMDP-bio stays available as the `wmdp-bio` target: its gated forget corpus when the server "
        "has it, else WMDP-bio question text (`wmdp-bio-text`) stands in, labelled."
    )

with st.expander("Server details"):
    st.markdown(f"URL `{CN.server_url()}` · status **{info.get('status')}** · jobs {info.get('jobs') or 'none'}")
    st.json(
        {
            "limits": info.get("limits"),
            "activation_cache": info.get("activation_cache"),
            "corpora": info.get("corpora"),
        },
        expanded=False,
    )
