"""The guided demo on the Home page: one button, then the forgotten question and the kept one.

Kept out of ``app.py`` so the page stays a short outline; the sentences come from
:mod:`render` (pure, unit-tested) and every number from the server's guided demo, run as the task
``demo`` (``POST /api/tasks/demo``: the default scan of 60 questions per set is past the
synchronous endpoint's limit), its progress drawn while it runs.
"""

from __future__ import annotations

import streamlit as st

from unlearn_core.evaluation.verdicts import verdict
from unlearn_core.server.client import ServerError, wait_until_finished
from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import figures as FIG
from unlearn_core.ui import nav as NV
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import questions as QS
from unlearn_core.ui import render as R
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import widgets as WG


def target_intro(t: dict) -> None:
    """What the demo will do on this target, before it runs."""
    iv = t["intervention"]
    st.markdown(f"**Target: {t['name']}.** {t['description']}")
    st.markdown(R.plain_demo_plan(t))
    with st.expander("Precisely"):
        st.caption(
            f"The demo selects {R.selection_summary(t, TP.selection_corpus(t))}, clamps them "
            f"({iv['mode']}, c = {iv['c']:g}), and looks for a question of `{t['forget_questions']}` the model "
            f"knows that the clamp makes it get wrong, and one of `{t['retain_questions'][0]}` it keeps."
            + (f" Note: {t['forget_corpus_note']}" if t.get("forget_corpus_note") else "")
        )


HEADINGS = {  # by verdict (evaluation.verdicts): a retain question is "kept" only when about as sure
    "forgotten": "Forgotten: a question the model knew",
    "kept": "Kept: a general-knowledge question that stays right",
    "less_sure": "Weakened: a general-knowledge question that stays right, but less sure",
}


def _example(ex: dict, iv: dict, forget: bool, qset: str) -> None:
    q, base, inter = ex["question"], ex["base"], ex["intervened"]
    kind = verdict(q["answer"], base["probs"], base["predicted"], inter["probs"], inter["predicted"]).kind
    st.markdown("#### " + HEADINGS["forgotten" if forget else kind])
    QS.show_question(q)
    st.markdown(R.demo_sentence(q, base, inter, len(iv["features"]), iv["c"]))
    label = f"clamped (c={iv['c']:g})"
    fig = FIG.probs_bar(
        base["probs"],
        inter["probs"],
        q["answer"],
        label=label,
        title="P(each answer): clean vs clamped",
        choices=q["choices"],
    )
    fig.data[0].name = "clean"
    st.plotly_chart(fig, key=f"demo_bars_{'forget' if forget else 'retain'}")
    with st.expander("The numbers"):
        st.markdown(R.prob_table_markdown([("clean", base), (label, inter)], q["answer"]))
    params = {
        "qset": qset,
        "q": q["id"],
        "features": ", ".join(map(str, iv["features"])),
        "mode": iv["mode"],
        "c": str(TP.clamp_c(iv["c"])),
        **({"tau": f"{iv['gate']:.4f}"} if iv.get("gate") is not None else {}),
    }
    NV.page_link("clamp", "Open this question in the Clamp explorer", NV.ICONS["clamp"], params)


def show_result(res: dict, t: dict, tiny: bool, info: dict | None = None) -> None:
    """The demo's result: the summary, the two questions (or why one is missing), the features."""
    f, r, iv = res.get("forget_example"), res.get("retain_example"), res["intervention"]
    checked = f"{res['n_checked_forget']} forget and {res['n_checked_retain']} retain question(s) checked."
    if f and r:
        st.success(res["summary"], icon=":material/check_circle:")
    else:
        st.info(res["summary"], icon=":material/info:")
        if tiny:
            st.caption(
                "The tiny test backend is a random model: it knows no question, so there is nothing to "
                "forget. Start the real model to see a flip."
            )
    st.caption(
        checked
        + (
            f" Features selected on `{res['forget_corpus']}`. {res['forget_corpus_note']}"
            if res.get("forget_corpus_note")
            else ""
        )
    )
    if f:
        _example(f, iv, True, t["forget_questions"])
    if r:
        _example(r, iv, False, t["retain_questions"][0])
    generation_panel(res.get("generation"))
    ids = iv["features"]
    st.markdown(
        f"**The intervention:** {PK.mode_labels().get(iv['mode'], iv['mode'])}, c = {iv['c']:g}, on "
        f"{len(ids)} feature(s) of `{iv['sae']}`: `{R.short(', '.join(map(str, ids)), 120)}`"
    )
    FS.add_to_set_widget(iv["sae"], ids, key="set_demo", label=f"Keep these {len(ids)} features as a feature set")
    report_button(res, t, info or {})


def generation_panel(g: dict | None) -> None:
    """The question asked openly: what the clean and the clamped model write, and what that shows."""
    st.markdown("#### In free text")
    if not g:
        st.caption("No train-half forget question among the first few is answered with its keyword in free text.")
        return
    st.markdown(
        f"Asked openly: `{R.short(g['prompt'].splitlines()[0], 120)}` (the answer's keyword: **{g['keyword']}**)"
    )
    c1, c2 = st.columns(2)
    c1.markdown(f"**Clean** {'✓ says it' if g['clean_says_it'] else ''}\n\n> {R.short(g['clean'].strip(), 200)}")
    c2.markdown(f"**Clamped** {'✓ says it' if g['clamped_says_it'] else ''}\n\n> {R.short(g['clamped'].strip(), 200)}")
    if g["degenerate"]:
        why = {
            "repetitive": "fewer than half of its words are distinct",
            "empty": "it has no words",
            "off-topic": f"the clean model finds it unlikely after this question: {g['clamped_nll']:.2f} nats/token",
        }.get(g["degenerate"], "")
        st.warning(
            f"The clamped text is **{g['degenerate']}** ({why}): broken output, not evidence of forgetting.",
            icon=":material/warning:",
        )
    else:
        st.info(f"The clamped model {g['verdict']} in free text.", icon=":material/info:")


def report_button(res: dict, t: dict, info: dict) -> None:
    """The demo as one HTML file that opens offline (``report.report_html``), with the features'
    automatic descriptions (computed on the first press, then cached)."""
    from unlearn_core.ui.report import report_html

    key = f"_demo_report:{t['name']}"
    if st.button("Prepare the demo report (HTML)", key="prep_report"):
        iv = res["intervention"]
        sel = ER.attempt(
            lambda: CN.cached("select_target", target=t["name"], n=len(iv["features"]), describe=True, sae=iv["sae"]),
            "describing the features",
            spinner="Describing the features (slow the first time)…",
        )
        desc = {r["feature"]: r.get("description") for r in (sel or {}).get("features", [])}
        st.session_state[key] = report_html(res, t, info, desc)
    if st.session_state.get(key):
        st.download_button(
            "Download the demo report",
            st.session_state[key],
            file_name=f"unlearning-demo-{t['name']}.html",
            mime="text/html",
            key="dl_report",
            help="One self-contained HTML file: opens offline, no network request.",
        )


def demo_section(t: dict | None, info: dict) -> None:
    """Intro, the "Run the demo" button and (once pressed, for this target) its result."""
    if t is None:
        st.info(
            "The server offers no unlearning target, so the guided demo is unavailable; the six steps below still work."
        )
        return
    target_intro(t)
    clicked = st.button(
        "Run the demo",
        type="primary",
        key="run_demo",
        help="Selects the target's features (slow the first time on the real model: feature "
        "statistics on each corpus, then cached) and checks a few questions.",
    )
    if not WG.once("demo", {"target": t["name"]}, clicked):
        return
    res = ER.attempt(lambda: demo_result(t["name"]), "the guided demo")
    if res is not None:
        show_result(res, t, tiny=info.get("model") == "tiny", info=info)


def demo_result(target: str) -> dict:
    """The demo's answer, from an earlier run (any session's, as ``CN.cached`` keeps answers) or as
    a task (its default scan is past the synchronous limit, and the first selection computes
    statistics), with its progress shown."""
    key = ("demo", CN.server_url(), st.session_state.get("_engine_sig", ""), target)
    done = CN.task_results()
    if key not in done:
        done[key] = run_demo_task(target)
    return done[key]


def run_demo_task(target: str) -> dict:
    """Submit the task ``demo`` and poll it (``wait_until_finished``), drawing its progress."""
    task_id = CN.call("submit_task", "demo", {"target": target}, retry=False)["id"]
    bar = st.progress(0.0, text=f"Selecting {target} features and checking questions…")

    def fetch() -> dict:
        j = CN.call("task", task_id)
        if j["status"] == "running" and j["total"]:
            bar.progress(
                min(1.0, j["done"] / j["total"]),
                text=f"Selecting {target} features and checking questions: step {j['done']} / {j['total']} · "
                f"ETA {R.fmt_eta(j.get('eta_s'))}",
            )
        return j

    j = wait_until_finished(fetch, "the guided demo", ("done", "total"), timeout=3600.0, poll=0.5)
    bar.empty()
    if j["status"] != "done":
        raise ServerError(400, f"the guided demo {j['status']}: {j.get('error') or ''}".strip())
    return j["result"]
