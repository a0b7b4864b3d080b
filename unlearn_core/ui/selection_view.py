"""The target's format-matched selection on the Feature search page (``POST /api/targets/select``).

Separate from the page so the page keeps its outline; it shows which forget corpus and which
retain corpora were actually used (the target's own, or a labelled fallback), and each
retain corpus's frequency next to their max, which is what the threshold is applied to.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from unlearn_core.features.selection_phrase import selection_phrase
from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import nav as NV
from unlearn_core.ui import page as PG
from unlearn_core.ui import render as R
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import widgets as WG

THRESHOLDS = [None, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001]
# None: the target's own method; the question-based ones rank by the train half's known questions
METHODS = [None, "frequency", "attribution", "fisher"]
METHOD_HELP = (
    "frequency: fires on the forget corpus, not on the retain corpora (the paper's). attribution: "
    "activation x gradient of the correct answer's log-probability, forget questions minus retain "
    "questions. fisher: Dynamic SAE Guardrails' squared mean-activation ratio. Both read only the "
    "train half of the target's known questions (minutes the first time, then cached)."
)


def selection_table(rows: list[dict], corpora: list[str], describe: bool) -> pd.DataFrame:
    """One row per feature: forget frequency, the max retain frequency, then one column per corpus."""
    out = []
    for r in rows:
        row = {"feature": r["feature"]}
        if r.get("top_token") is not None:  # a search selection: the query token it fires on most, how specifically
            row.update({"query token": r["top_token"], "specificity": r["score"]})
        elif r.get("score") is not None:  # a question-based selection (attribution, fisher): its score
            row["score"] = r["score"]
        row.update({"forget_freq": r["forget_freq"], "retain_freq": r["retain_freq"], "ratio": r["ratio"]})
        for c in corpora:
            row[f"retain: {c}"] = (r.get("retain_freqs") or {}).get(c)
        if describe:
            row["description"] = r.get("description") or ""
        out.append(row)
    return pd.DataFrame(out)


def used_corpora_caption(res: dict) -> str:
    retain = ", ".join(f"`{c}`" for c in res["retain_corpora"])
    if res.get("method") in ("attribution", "fisher"):
        how = selection_phrase(
            res["method"],
            len(res["features"]),
            forget_questions=f"`{res['forget_questions']}`" if res.get("forget_questions") else "",
            n_questions=(res.get("n_forget_questions") or 0, res.get("n_retain_questions") or 0),
        )
        return (
            f"Of `{res['sae']}`, {how}; the frequency columns are on the forget corpus "
            f"`{res['forget_corpus']}` and the retain corpora {retain}, {res['n_tokens']} tokens each. Click a "
            "column header to sort."
        )
    if res.get("method") == "search":
        how = selection_phrase("search", len(res["features"]), query=res["query"], background=res["background"])
        return (
            f"Of `{res['sae']}`, {how}; the frequency columns are on the forget corpus "
            f"`{res['forget_corpus']}` and the retain corpora {retain}, {res['n_tokens']} tokens each. Click a "
            "column header to sort."
        )
    return (
        f"{len(res['features'])} features of `{res['sae']}`; forget corpus `{res['forget_corpus']}` against "
        f"the retain corpora {retain} (a feature's retain frequency is its highest over them); threshold "
        f"{res['threshold']:g}; {res['n_tokens']} tokens per corpus. Click a column header to sort."
    )


def own_choice(sel: dict) -> str:
    """The threshold box's entry for the target's own selection."""
    method = sel.get("method", "frequency")
    return f"the target's ({sel['threshold']:g})" if method == "frequency" else f"the target's ({method})"


def no_rows_message(res: dict) -> str:
    if res.get("method") == "search":
        return f'No non-dense feature fires on the query "{res["query"]}".'
    if res.get("method") in ("attribution", "fisher"):
        return f"No feature passes the {res['method']} selection on the train-half questions."
    return (
        f"No feature fires on less than {res['threshold']:g} of the tokens of every retain corpus: raise the threshold."
    )


def _explain(t: dict) -> None:
    """What the selection does: the target's own method, or the frequency selection run here."""
    sel = t["selection"]
    retain = ", ".join(f"`{c}`" for c in t["retain_corpora"])
    kind = "**format-matched** " if len(t["retain_corpora"]) > 1 else ""  # one retain corpus: the paper's kind
    by_freq = (
        f"drop features firing on at least the threshold of the tokens of **any** retain corpus ({retain}), "
        f"rank the rest by their frequency on the forget corpus `{TP.selection_corpus(t)}`, keep the top N."
    )
    if sel.get("method", "frequency") != "frequency":
        st.markdown(
            f"The target's default: {R.selection_summary(t, TP.selection_corpus(t))}. Pick a retain "
            f"threshold below for the {kind}frequency selection instead: {by_freq}"
        )
    else:
        st.markdown(f"The target's {kind}selection: {by_freq}")
    if t.get("forget_corpus_note"):
        st.caption(f"Note: {t['forget_corpus_note']}")


def _settings(t: dict, sae: str, info: dict) -> dict:
    """The selection's settings as the request's parameters (threshold None: the target's)."""
    sel = t["selection"]
    max_n = int(info.get("limits", {}).get("max_features", 512))
    c0, c1, c2, c3 = st.columns(4)
    method = c0.selectbox(
        "Selection method",
        METHODS,
        key="tsel_method",
        format_func=lambda m: f"the target's ({sel.get('method', 'frequency')})" if m is None else m,
        help=METHOD_HELP,
    )
    by_questions = method in ("attribution", "fisher")
    thr = c1.selectbox(
        "Retain threshold",
        THRESHOLDS,
        key="tsel_thr",
        format_func=lambda x: own_choice(sel) if x is None else f"{x:g}",
        disabled=by_questions,
        help="not used by the question-based methods" if by_questions else None,
    )
    n = c2.number_input("N features", 1, max_n, min(int(sel["n"]), max_n), key=f"tsel_n_{t['name']}")
    describe = c3.checkbox("Add automatic descriptions", key="tsel_describe")
    out = dict(target=t["name"], sae=sae, n=int(n), describe=describe, **PG.current_variant())
    if method is not None:
        out["method"] = method
    if not by_questions:
        out["threshold"] = thr
    return out


def frequency_columns(retain_label: str) -> dict:
    """The forget and retain frequencies and their ratio, as both selection tables (the paper's
    and the target's) format them; ``retain_label`` says which retain frequency it is."""
    return {
        "forget_freq": st.column_config.NumberColumn("forget frequency", format="%.4f"),
        "retain_freq": st.column_config.NumberColumn(retain_label, format="%.4f"),
        "ratio": st.column_config.NumberColumn("forget / retain", format="%.2f"),
    }


def _result_table(res: dict, describe: bool) -> None:
    df = selection_table(res["features"], res["retain_corpora"], describe)
    fmt = {c: st.column_config.NumberColumn(c, format="%.4f") for c in df.columns if c.startswith("retain: ")}
    WG.table(
        df,
        {
            **frequency_columns("retain frequency (max)"),
            "specificity": st.column_config.NumberColumn("specificity", format="%.2f"),
            "score": st.column_config.NumberColumn(f"{res.get('method')} score", format="%.4g"),
            **fmt,
        },
    )
    st.caption(used_corpora_caption(res))


def _actions(t: dict, sae: str, ids: list[int], on_open: Callable[[int], None]) -> None:
    """Open a feature's dashboard, clamp the selection, or add it to a feature set."""
    c1, c2, c3 = st.columns([2, 2, 3], vertical_alignment="bottom")
    pick = c1.selectbox("Feature", ids, key="pick_tsel")
    c2.button("Open its dashboard", key="open_tsel", on_click=on_open, args=(pick,))
    iv = t["intervention"]
    with c3:
        NV.page_link(
            "clamp",
            f"Clamp these {len(ids)} features",
            NV.ICONS["clamp"],
            {
                "features": ", ".join(map(str, ids)),
                "mode": iv["mode"],
                "c": str(TP.clamp_c(iv["c"])),
                "qset": t["forget_questions"],
            },
        )
    FS.add_to_set_widget(sae, ids, key="set_tsel")


def target_selection(t: dict, sae: str, info: dict, on_open: Callable[[int], None]) -> None:
    """Settings (threshold and N default to the target's), a run button, the table and its actions."""
    _explain(t)
    params = _settings(t, sae, info)
    clicked = st.button("Run the selection", type="primary", key="run_tsel")
    if not WG.once("select_target", params, clicked):
        return
    res = ER.attempt(
        lambda: CN.cached("select_target", **params),
        f"the selection for {t['name']}",
        spinner=f"Computing feature statistics on the forget corpus and {len(t['retain_corpora'])} retain "
        "corpora (minutes the first time on CPU, then cached)…",
    )
    if res is None:
        return
    if res.get("note"):
        st.info(res["note"], icon=":material/info:")
    rows = res["features"]
    if not rows:
        st.warning(no_rows_message(res))
        return
    _result_table(res, params["describe"])
    _actions(t, sae, [r["feature"] for r in rows], on_open)
