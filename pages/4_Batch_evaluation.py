"""Batch evaluation: a sweep over (retain threshold, N features, clamp value) run as a server job,
with progress, results, the paper's Figure 5, the unlearning score, run comparison and export."""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from unlearn_core.ui import batch_form as BF
from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import figures as FIG
from unlearn_core.ui import page as PG
from unlearn_core.ui import persist_view as PV
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import render as R
from unlearn_core.ui import results as RS
from unlearn_core.ui import rmu_view as RV
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import url_state as US
from unlearn_core.ui import widgets as WG

info, sae = PG.tool_page("Batch evaluation")
labels = PK.mode_labels()
limits = info.get("limits", {})
RUNNING = ("queued", "running")
BIO_FALLBACK = BF.BIO_FALLBACK

jobs = ER.attempt(lambda: CN.call("jobs")["jobs"], "the list of runs")
if jobs is None:
    st.stop()

# ---------------------------------------------------------------- configuration
target = TP.current_target()
RV.panel(target)
PV.panel(target)
with st.expander("Configure a sweep", expanded=not jobs):
    st.markdown(
        "For every (retain threshold, N, c): select the top-N features by forget frequency among those "
        "firing on less than the threshold of the retain tokens, clamp them at c, and measure forget "
        "accuracy, retain (side-effect) accuracy and loss added. The clean model is evaluated once as the "
        "baseline."
    )
    wmdp = ER.attempt(lambda: CN.cached("questions", set="wmdp-bio", limit=1), "the WMDP-bio question set")
    wmdp_label = wmdp["label"] if wmdp else "WMDP-bio"
    setup = "paper"
    if target:
        setup = (
            st.segmented_control(
                "Set up from",
                ["target", "paper"],
                default="target",
                key="b_setup",
                format_func=lambda o: f"the target {target['name']}" if o == "target" else "the paper's WMDP-bio setup",
                help="The target prefills the question sets, corpora and known filter (the sidebar picks the target); "
                "the paper's setup is WMDP-bio against MMLU subjects, one retain corpus.",
            )
            or "target"
        )

    c1, c2, c3, c4 = st.columns(4)
    BF.prefill_grid(target)  # from the target's default; again when the sidebar picks another target
    max_c = float(limits.get("max_abs_clamp", 1e4))
    thr_text = c1.text_input("Retain thresholds", key="b_thr", help="comma-separated, in (0, 1]")
    ns_text = c2.text_input("N features", key="b_ns", help="prefilled from the target's default N")
    val_text = c3.text_input("Clamp values c", key="b_vals", help=f"prefilled from the target's c; 0 to {max_c:g}")
    modes = c4.multiselect(
        "Modes",
        info.get("modes") or list(labels),
        default=["clamp"],
        key="b_modes",
        format_func=lambda m: PK.mode_short().get(m, m),
        help="Several modes run side by side over the same configurations and questions "
        "(e.g. clamp and gated), each scored and plotted as its own series.",
    )
    gate = {}
    if any(m in ("gated", "dsg") for m in modes):
        g1, g2, g3 = st.columns(3)
        how = (
            g1.segmented_control(
                "Gate τ",
                ["percentile", "value"],
                default="percentile",
                key="b_gate_how",
                help="The gate opens on a prompt when the fraction ρ of its tokens where a "
                "selected feature fires is > τ. DSG sets τ to the 95th percentile of ρ over "
                "retain text, per selection of features.",
            )
            or "percentile"
        )
        if how == "percentile":
            gate = {
                "gate_percentile": float(
                    g2.number_input(
                        "Percentile of ρ on the retain corpus", 0.0, 100.0, 95.0, step=1.0, key="b_gate_pct"
                    )
                ),
                "gate_corpus": g3.selectbox(
                    "Calibration corpus",
                    BF.named_corpora(info),
                    key="b_gate_corpus",
                    index=BF.named_corpora(info).index("wikitext@train")
                    if "wikitext@train" in BF.named_corpora(info)
                    else 0,
                ),
            }
        else:
            gate = {"gate": float(g2.number_input("τ", 0.0, 1.0, 0.15, step=0.01, key="b_gate_tau"))}
    data = BF.target_form(target, info) if setup == "target" else BF.paper_form(info, wmdp)
    c1, c2 = st.columns(2)
    qlimit = c1.number_input("Question limit per set (0 = all)", 0, 100_000, 50, step=10, key="b_qlimit")
    loss_tokens = c2.number_input(
        "Loss-added tokens (0 = off)",
        0,
        int(limits.get("max_eval_tokens", 100_000)),
        2000,
        step=1000,
        key="b_loss_tokens",
    )
    known = data["known"]
    side = data["side_effect_sets"]
    rmu_done = RV.finished()
    variants = st.multiselect(
        "Fine-tuned models to compare (RMU, persistent)",
        rmu_done,
        default=[],
        key="b_variants",
        help="Finished RMU or persistent runs (train one above): each is evaluated as one more "
        "point, with no clamp, on the same known questions and loss windows.",
        placeholder="none trained yet" if not rmu_done else "choose runs",
    )
    on_model = (
        st.selectbox(
            "Clamps run on",
            ["base", *rmu_done],
            key="b_model",
            format_func=lambda v: "the model as loaded" if v == "base" else f"{v} (clamps on top of it)",
            help="Run the clean row and every clamp configuration on a finished RMU or persistent "
            "model: the clamp on top of it. The known questions, the feature selection and the clean loss stay "
            "the model as loaded's, so the rows compare with a plain sweep's.",
        )
        if rmu_done
        else "base"
    )

    spec, problem = None, None
    try:
        thresholds, ns, values = BF.sweep_grid(thr_text, ns_text, val_text, max_c, R.parse_numbers)
        if not modes:
            raise ValueError("choose at least one mode")
        spec = {
            "sae": sae,
            **data,
            "thresholds": thresholds,
            "ns": ns,
            "values": values,
            "mode": modes[0],
            "modes": modes if len(modes) > 1 else [],
            **gate,
            "question_limit": int(qlimit),
            "loss_tokens": int(loss_tokens),
            "variants": variants,
            **({"model_variant": on_model} if on_model != "base" else {}),
        }
    except ValueError as e:
        problem = str(e)
    if problem:
        st.error(problem)
    else:
        n_cfg = len(spec["thresholds"]) * len(spec["ns"]) * len(spec["values"]) * len(modes)
        what = "retain question set(s)" if setup == "target" else "side-effect subject(s)"
        st.caption(
            f"{n_cfg} configuration(s) + the clean baseline"
            + (f", on {on_model}" if on_model != "base" else "")
            + (f" + {len(variants)} fine-tuned model(s)" if variants else "")
            + f"; {len(side)} {what}; "
            f"{'all' if not qlimit else int(qlimit)} questions per set"
            + (", known filter on (slow the first time: 24 orderings per question)" if known else "")
            + (", strict" if data.get("strict_known") else "")
            + "."
        )

    if st.button("Run the sweep", type="primary", disabled=spec is None, key="b_run"):
        job = ER.attempt(lambda: CN.call("submit_job", spec, retry=False), "the sweep", spinner="Submitting the sweep…")
        if job is not None:
            st.session_state["job"] = job["id"]  # the run selector below opens it
            st.session_state["_new_job"] = job["id"]

# ---------------------------------------------------------------- runs
st.header("Runs")
new = st.session_state.pop("_new_job", None)
if new and new not in {j["id"] for j in jobs}:  # just submitted: list it even if the list was read before
    jobs = ER.attempt(lambda: CN.call("jobs")["jobs"], "the list of runs") or jobs
if not jobs:
    st.info("No runs yet: configure a sweep above and press **Run the sweep**.")
    st.stop()
jobs = sorted(jobs, key=lambda j: j["created"], reverse=True)
by_id = {j["id"]: j for j in jobs}


def job_label(i: str) -> str:
    """The run's id and when it was made: things that do not change. (Its status was in the label
    too, and the browser kept showing "running" after the run had finished: a select box's option
    labels are not redrawn when only their text changes. The status is a caption under it.)"""
    j = by_id.get(i)
    if j is None:
        return i
    return f"{i} · made {time.strftime('%Y-%m-%d %H:%M', time.localtime(j['created']))}"


job_id = US.url_selectbox("Run", list(by_id), key="job", format_func=job_label)


def results_table(rows: list[dict], word: str) -> None:
    """The results, accuracies and their question counts first (visible without scrolling)."""
    WG.table(
        pd.DataFrame(rows),
        {
            "forget_accuracy": st.column_config.NumberColumn("forget acc", format="%.3f"),
            "forget_n": st.column_config.NumberColumn(
                "forget n", format="%d", help="questions behind the forget accuracy"
            ),
            "side_effect_mean": st.column_config.NumberColumn(
                f"{word} acc", format="%.3f", help=f"mean over the {word} question sets"
            ),
            "side_n": st.column_config.NumberColumn(
                f"{word} n",
                format="%d",
                help=f"questions behind the {word} accuracy, all sets together (per set: the n_questions column)",
            ),
            "loss_added": st.column_config.NumberColumn("loss added", format="%.4f"),
            "n": st.column_config.NumberColumn("N", help="N: the top-N features asked for"),
            "n_features": st.column_config.NumberColumn("features used", help="how many features were clamped"),
        },
    )


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    try:
        j = CN.call("job", job_id)
    except Exception as e:
        ER.show_error(e, "the run's progress")
        return
    if j["status"] not in RUNNING:
        st.rerun(scope="app")
    fraction, text = R.job_progress(j, time.time())
    st.progress(fraction, text=text)
    if st.button("Cancel the run", key="cancel"):
        try:
            CN.call("cancel_job", job_id, retry=False)
        except Exception as e:
            ER.show_error(e, "cancelling")
    if j["results"]:
        word = "retain" if (j.get("spec") or {}).get("target") else "side-effect"
        results_table(RS.result_rows(j["results"]), word)


detail = ER.attempt(lambda: CN.call("job", job_id), f"run {job_id}")
if detail is None:
    st.stop()
done_n, total_n = R.job_counts(detail)
st.caption(f"This run: **{detail['status']}**, {done_n} of {total_n} configurations (and the clean baseline).")
if detail.get("note"):
    st.caption(f"Note: {detail['note']}")
if detail["status"] in RUNNING:
    live(job_id)
    st.stop()
if detail["status"] == "failed":
    st.error(f"The run failed: {detail.get('error') or 'see the server log'}")
elif detail["status"] == "cancelled":
    st.warning(f"The run was cancelled after {detail['done']} of {detail['total']} configurations.")
elif detail["status"] == "paused":
    st.warning("This run was created for another model and is not resumed by this server.")

results = detail["results"]
spec = detail["spec"]
if not results:
    st.info("No results in this run.")
    st.stop()

rows = RS.result_rows(results)  # with forget_n / side_n: the questions behind each accuracy
df = pd.DataFrame(rows)
fs = spec.get("forget_set", "")
forget_short = "MMLU-biology fallback" if fs == BIO_FALLBACK else (wmdp_label if fs == "wmdp-bio" else fs)
side_word = "retain" if spec.get("target") else "side-effect"

# ---------------------------------------------------------------- forget vs retain
st.subheader("Forget against retain" + (f" (target {spec['target']})" if spec.get("target") else ""))
st.markdown(RS.forget_retain_summary(results, spec))

# ---------------------------------------------------------------- score
st.subheader("Unlearning score")
sc = RS.unlearning_score(rows, word=side_word)  # rows: with the question counts its reason quotes
per_mode = RS.by_mode(results)
if len(per_mode) > 1:  # modes side by side: each its own score
    WG.table(
        pd.DataFrame(
            [
                {
                    "mode": PK.mode_short().get(m, m),
                    "unlearning score": s["score"],
                    "best config": s["best_config"],
                    "forget acc.": s["forget_accuracy"],
                    f"{side_word} acc.": s["side_effect_mean"],
                    "configs kept (≥ 0.99 side effects)": s["n_eligible"],
                    "gate open (forget)": next(
                        (r.get("gate_open", {}).get("forget") for r in rs if r.get("gate_open")), None
                    ),
                }
                for m, rs in per_mode.items()
                for s in [RS.unlearning_score(rs)]
            ]
        )
    )
base_row = next((r for r in rows if r["config"] == "none"), {})
best_row = next((r for r in rows if r["config"] == sc["best_config"]), {})


def n_caption(col, r: dict, both: bool = False) -> None:
    """The number of questions behind a metric's accuracy, right under it."""
    parts = ([f"{r['forget_n']} forget questions"] if r.get("forget_n") is not None else []) + (
        [f"{r['side_n']} {side_word} questions"] if both and r.get("side_n") is not None else []
    )
    if parts:
        col.caption("on " + ", ".join(parts))


c1, c2, c3, c4 = st.columns(4)
c1.metric(
    "Unlearning score",
    "—" if sc["score"] is None else f"{sc['score']:.3f}",
    help="1 − the best configuration's forget accuracy; the caption says on how many questions.",
)
n_caption(c1, best_row or base_row, both=True)
c2.metric("Best config", sc["best_config"] or "—", help="threshold t, number of features n, clamp value c")
c3.metric("Clean forget accuracy", "—" if sc["baseline_forget"] is None else f"{sc['baseline_forget']:.3f}")
n_caption(c3, base_row)
c4.metric(f"Clean {side_word} accuracy", "—" if sc["baseline_side"] is None else f"{sc['baseline_side']:.3f}")
if base_row.get("side_n") is not None:
    c4.caption(f"on {base_row['side_n']} {side_word} questions")
if sc["score"] is None and sc["reason"]:  # say why the score is missing, where the "—" is
    st.info(f"No unlearning score: {sc['reason']}.", icon=":material/info:")
few = BF.few_questions(results, spec, side_word)
if few:
    st.warning(few, icon=":material/warning:")
st.caption(
    RS.SCORE_DEFINITION + (f" ({sc['reason']}.)" if sc["reason"] else f" {sc['n_eligible']} configuration(s) qualify.")
)

# ---------------------------------------------------------------- Figure 5 (+ comparison)
st.subheader("Forget accuracy against side effects (the paper's Figure 5)")
done_jobs = [i for i, j in by_id.items() if i != job_id and j["status"] in ("done", "cancelled") and j["done"] > 0]
other = US.url_selectbox(
    "Compare with another run",
    [None, *done_jobs],
    key="cmp",
    format_func=lambda i: "— none —" if i is None else job_label(i),
)
this_run = R.run_name(by_id[job_id], "this run")  # legends read words, not run ids
runs = (
    {this_run: rows}
    if len(per_mode) < 2
    else {f"{PK.mode_short().get(m, m)}, {this_run}": RS.result_rows(rs) for m, rs in per_mode.items()}
)
compare_detail = None
if other:
    compare_detail = ER.attempt(lambda: CN.call("job", other), f"run {other}")
    if compare_detail is not None:
        runs[R.run_name(by_id[other], "compared run")] = RS.result_rows(compare_detail["results"])
fig5 = FIG.figure5(
    runs, forget_label=f"forget accuracy ({R.short(forget_short, 40)})", side_label=f"{side_word} accuracy"
)
st.plotly_chart(fig5, key="fig5")
st.caption(
    "Each marker is one (threshold, N, c) configuration; the star is the clean model. Good configurations "
    "sit low (little forget accuracy left) and to the right on the left plot (side effects kept), and to "
    "the left on the right plot (little loss added). Hover a marker for its configuration and the "
    "number of questions (n) behind its accuracies."
)
if compare_detail is not None:
    sc2 = RS.unlearning_score(compare_detail["results"])
    WG.table(
        pd.DataFrame(
            [
                {
                    "run": job_id,
                    "score": sc["score"],
                    "best config": sc["best_config"],
                    "configs": len(results) - 1,
                    "spec": json.dumps({k: spec.get(k) for k in ("thresholds", "ns", "values", "mode")}),
                },
                {
                    "run": other,
                    "score": sc2["score"],
                    "best config": sc2["best_config"],
                    "configs": len(compare_detail["results"]) - 1,
                    "spec": json.dumps(
                        {k: compare_detail["spec"].get(k) for k in ("thresholds", "ns", "values", "mode")}
                    ),
                },
            ]
        )
    )

# ---------------------------------------------------------------- table and export
st.subheader("Results")
results_table(rows, side_word)
with st.expander("The run's specification"):
    st.json(spec)

st.markdown("**Export**")
e = st.columns(4)
e[0].download_button("Results (CSV)", df.to_csv(index=False), file_name=f"sweep-{job_id}.csv", mime="text/csv")
e[1].download_button(
    "Run (JSON)", json.dumps(detail, indent=2), file_name=f"sweep-{job_id}.json", mime="application/json"
)
e[2].download_button(
    "Figure 5 (HTML)",
    fig5.to_html(include_plotlyjs=True, full_html=True),
    file_name=f"figure5-{job_id}.html",
    mime="text/html",
    help="Interactive, self-contained (works offline).",
)
if WG.kaleido_available():
    if e[3].button("Prepare Figure 5 as PNG"):
        try:
            with st.spinner("Rendering with kaleido…"):
                st.session_state["_png"] = (job_id, fig5.to_image(format="png", width=1300, height=480, scale=2))
        except Exception as ex:
            st.error(f"PNG export failed ({type(ex).__name__}: {ex}); use the HTML export.")
    png = st.session_state.get("_png")
    if png and png[0] == job_id:
        e[3].download_button("Figure 5 (PNG)", png[1], file_name=f"figure5-{job_id}.png", mime="image/png")
else:
    e[3].caption(
        "PNG export needs the `kaleido` package (not installed) plus a local Chromium "
        "(`BROWSER_PATH`); the HTML export works everywhere."
    )
