"""The Robustness page's parts (Streamlit): the start form, a run's progress, the heat map and the
drill-down to single facts. Every number comes from the server's attack runs (``/api/attacks``);
the pure parts are :mod:`.robustness`. URL state: ``?run=<id>&defence=<name>&attack=<name>``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import robustness as RB
from unlearn_core.ui import url_state as US
from unlearn_core.ui import widgets as WG

RUNNING = ("queued", "running")
CLAMPS = ["default", "clamp", "gated", "dsg", "none"]
DEFENCE_WORDS = {
    "default": "the target's default intervention",
    "clamp": "its features, static clamp",
    "gated": "its features, gated clamp",
    "dsg": "its features, DSG's gated clamp",
    "none": "no defence (a control: nothing to recover)",
}


def intro() -> None:
    st.markdown(
        "A defence can make the model answer a quiz question wrongly without removing what it knows: "
        "ask the same fact **another way** and the answer may come back. This page runs the **attack "
        "bench**: each attack asks the target's held-out facts differently (other words, a sentence to "
        "complete, a longer context, answered examples before it, free text, or a short fine-tune), with "
        "the defence on, and counts how many of the facts the defence had hidden come back."
    )
    with st.expander("Precise terms"):
        st.markdown(
            "- **Facts**: the target's forget questions in its held-out part (`eval_part`), kept when the "
            "clean model knows them in the original wording (the target's known filter: right, and with "
            "`strict_known` wrong with the question blanked) *and* in the attacked form.\n"
            "- **Forgotten**: a fact the defence makes the model answer wrongly in the original wording.\n"
            "- **Recovery** = recovered / forgotten: of the forgotten facts, the share answered right again "
            "under the attack. `k/n` in a cell is k recovered of n forgotten; `—` means the defence "
            "forgot none of these facts, so there is no rate.\n"
            "- **Threat model**: *api*, the defence stays on and only the input changes; *weights*, the "
            "attacker holds the weights with the defence as shipped (`relearn`: fine-tune on half of the "
            "known facts (T, the same half for every defence), score the forgotten facts of the other half "
            "(V), Deeb & Roger; or on 10 WikiText samples, Łucki et al.).\n"
            "- **Retain acc.**: accuracy under the defence on the known questions of the target's first "
            "retain set, in their own wording (few-shot and filler rows: under the same attack, in the "
            "hover). The column beside the map shows each defence's own-wording figure.\n"
            "- **P clean / defended / attacked** (drill-down): the probability of the correct answer for "
            "the clean model and the defended one in the original wording, and the defended one in the "
            "attacked form (free text has none)."
        )


RUN_WORDS = {"rmu": "a finished RMU run", "persist": "a finished persistent SAE-guided run"}


def start_form(target: dict | None, offered: dict, rmu_variants: list[str], has_runs: bool) -> None:
    """Start a run on the sidebar's target: the chosen defences x attacks."""
    with st.expander("Run the attack bench", expanded=not has_runs):
        if target is None:
            st.info("Choose an unlearning target in the sidebar first.")
            return
        st.markdown(
            f"Attack **{target['name']}**'s held-out facts. The run goes on in the server's background "
            "worker (the other pages stay usable); every finished row is kept, so a cancelled or "
            "interrupted run resumes where it stopped."
        )
        if not target.get("probes"):
            st.caption(f"{target['name']} has no probe set: rephrase, fill_blank, context and generation need one.")
        c1, c2 = st.columns(2)
        defences = c1.multiselect(
            "Defences",
            CLAMPS + rmu_variants,
            default=["default", "none"],
            key="rb_defences",
            format_func=lambda d: f"{d}: {DEFENCE_WORDS.get(d) or RUN_WORDS.get(d.split(':')[0], d)}",
            help="rmu:<run> and persist:<run> need a finished run (Batch evaluation page's RMU and "
            "persistent panels); a persistent run is the clamp's features suppressed in the weights.",
        )
        api = [a for a, threat in offered.items() if threat == "api"]
        attacks = c2.multiselect(
            "Attacks",
            list(offered),
            default=api,
            key="rb_attacks",
            format_func=lambda a: a if offered.get(a) == "api" else f"{a} (weights: fine-tunes, minutes per defence)",
            help="few_shot runs with 3 and 8 answered examples; relearn as facts (T/V split) and wikitext.",
        )
        clicked = st.button("Run the attack bench", type="primary", key="rb_start", disabled=not (defences and attacks))
        if clicked:
            run = ER.attempt(
                lambda: CN.call("start_attack", target["name"], defences, attacks, retry=False),
                "the attack run",
                spinner="Submitting the run…",
            )
            if run is not None:
                st.session_state["_rb_pick"] = run["id"]
                st.rerun()


def run_picker(runs: list[dict]) -> str:
    """The run shown (``?run=``); a run just started is picked on the next run of the page."""
    by_id = {r["id"]: r for r in reversed(runs)}  # newest first: the default
    pick = st.session_state.pop("_rb_pick", None)
    if pick in by_id:
        st.session_state["run"] = pick
        US.shared()["run"] = pick
    return US.url_selectbox("Attack run", list(by_id), key="run", format_func=lambda i: RB.run_label(by_id[i]))


@st.fragment(run_every=1.0)
def live(run_id: str, done: int) -> None:
    """Progress of a queued or running run, with cancel; the whole page again when a row is in."""
    try:
        r = CN.call("attack_run", run_id)
    except Exception as e:  # noqa: BLE001 - shown, and the fragment retries
        ER.show_error(e, "the run's progress")
        return
    if r["status"] not in RUNNING or r["done"] != done:
        st.rerun(scope="app")
    fraction, text = RB.progress(r)
    st.progress(fraction, text=text)
    if st.button("Cancel the run", key="rb_cancel"):
        ER.attempt(lambda: CN.call("cancel_attack", run_id, retry=False), "cancelling")


def status(run: dict) -> None:
    """What the run is doing, or how it ended (with Resume where it can go on)."""
    if run["status"] in RUNNING:
        live(run["id"], run["done"])
        return
    if run.get("note"):
        st.caption(f"Note: {run['note']}")
    ended = {
        "failed": f"The run failed after {run['done']} of {run['total']} rows: {run.get('error') or 'see the log'}",
        "cancelled": f"The run was cancelled after {run['done']} of {run['total']} rows.",
        "paused": "This run was made for another model; this server does not resume it.",
    }
    if run["status"] in ended:
        (st.error if run["status"] == "failed" else st.warning)(ended[run["status"]])
    if run["status"] in ("failed", "cancelled") and st.button(
        "Resume the run", key="rb_resume", help="Finished rows are kept; only the others are computed."
    ):
        if ER.attempt(lambda: CN.call("resume_attack", run["id"], retry=False), "resuming the run") is not None:
            st.rerun()


def heat_map(result: dict) -> None:
    """The defences x attacks map; a click on a cell opens it in the drill-down below."""
    st.subheader("Does the knowledge come back?")
    st.markdown(
        "Each cell: of the facts the defence made the model forget, how many the attack brings back "
        "(**recovered / forgotten**). Green: they stay forgotten; red: they come back. Grey **—**: the "
        "defence made the model forget none of these facts. **Click a cell** to see its facts one by one."
    )
    fig = RB.heat_map(result)
    event = st.plotly_chart(
        fig, key="rb_heat", on_select="rerun", selection_mode="points", config={"displayModeBar": False}
    )
    cell = RB.picked_cell(event)
    if cell and st.session_state.get("_rb_clicked") != cell:  # a new click: the drill-down follows it
        st.session_state["_rb_clicked"] = cell
        st.session_state["defence"], st.session_state["attack"] = cell
    st.caption(
        f"Target **{result['target']}**, {result.get('part')} part: {result.get('n_known_forget', '?')} known forget "
        f"questions, {result.get('n_known_retain', '?')} known retain questions (`{result.get('retain_set') or '?'}`); "
        f"probes `{result.get('probes')}`; {result.get('wall_s', 0):.0f} s of computing."
        + ("" if result.get("complete") else " **Not complete**: the rows finished so far.")
    )
    with st.expander("Every row in numbers"):
        WG.table(pd.DataFrame([{k: v for k, v in r.items() if k not in ("facts", "curve")} for r in result["rows"]]))


def drill_down(result: dict) -> None:
    """One cell fact by fact (``?defence=&attack=``): the questions, the three probabilities, and a
    relearning row's curve."""
    g = RB.grid(result)
    st.subheader("One cell, fact by fact")
    c1, c2 = st.columns(2)
    with c1:
        d = US.url_selectbox("Defence", g.defences, key="defence")
    with c2:
        a = US.url_selectbox("Attack", g.attacks, key="attack")
    row = g.cells.get((d, a))
    if row is None:
        st.info(f"The run has no row for {d} × {a} (yet).")
        return
    m = st.columns(5)
    m[0].metric("Facts", row.get("n_facts", 0), help="known by the clean model in both forms")
    m[1].metric("Forgotten", row.get("n_forgotten", 0), help="wrong under the defence in the original wording")
    m[2].metric("Recovered", row.get("n_recovered", 0), help="of those, right again under the attack")
    rate = row.get("recovery_rate")
    m[3].metric("Recovery", RB.NO_RECOVERY if rate is None else f"{rate:.2f}")
    ret = row.get("retain_acc")
    m[4].metric("Retain acc.", RB.NO_RECOVERY if ret is None else f"{ret:.2f}", help=row.get("retain_form"))
    if row.get("skipped"):
        st.info(row["skipped"])
    fig = RB.curve_figure(row)
    if fig is not None:
        st.plotly_chart(fig, key="rb_curve")
        how = (
            f"Fine-tuned on {row['n_samples']} WikiText samples that say nothing about the facts; scored on "
            f"the {row.get('n_V', 0)} forgotten facts."
            if row.get("n_samples")
            else f"Fine-tuned on T ({row.get('n_T', 0)} forgotten facts), scored on V ({row.get('n_V', 0)} "
            "forgotten facts it never saw)."
        )
        st.caption(f"{how} Reported: {row.get('rule', '')}.")
    only = st.toggle("Only the facts the defence made the model forget", key="rb_only_forgotten")
    rows = [r for r in RB.fact_rows(row) if r["forgotten"] or not only]
    prob = {
        k: st.column_config.NumberColumn(k, format="%.3f", help=h)
        for k, h in (
            ("P clean", "P(correct answer), clean model, original wording"),
            ("P defended", "P(correct answer) under the defence, original wording"),
            ("P attacked", "P(correct answer) under the defence, attacked form (free text: none)"),
        )
    }
    WG.table(
        pd.DataFrame(rows),
        {
            **prob,
            "original question": st.column_config.TextColumn(width="medium"),
            "attacked form": st.column_config.TextColumn(width="medium"),
        },
    )
    if row.get("threat") == "weights":
        st.caption("A relearning row's attacked form is the fact's own wording, scored after the fine-tune.")
    elif row["attack"] == "generation":
        st.caption("Free text: the attacked form is a prompt; recovered means its continuation names the answer.")
