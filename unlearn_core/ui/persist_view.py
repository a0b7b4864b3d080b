"""The persistent method in the app: a panel that trains a run on the current target over the
server (progress, ETA, cancel), the runs, and each run's training curve (its three terms per step),
so a user sees the features' activation fall while the retain term stays flat."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import render as R
from unlearn_core.ui import widgets as WG

RUNNING = ("queued", "running")
TERMS = {
    "forget_loss": "forget: selected features' activation left (1 = all)",
    "retain_loss": "retain: residual change on retain text (relative)",
    "lm_loss": "lm: KL to the original on retain text",
}


def runs() -> list[dict]:
    """Every persistent run the server knows ([] when it cannot say: an older server, or an error shown)."""
    return ER.attempt(lambda: CN.call("persist_runs"), "the persistent runs") or []


def curve(run: dict, key: str) -> None:
    """The training curve: each term per step (log scale: the forget term falls by orders)."""
    hist = run.get("history") or []
    if not hist:
        st.caption("No step yet.")
        return
    fig = go.Figure()
    for k, label in TERMS.items():
        ys = [max(h.get(k, 0.0), 1e-8) for h in hist]
        if any(h.get(k, 0.0) > 0 for h in hist):
            fig.add_trace(go.Scatter(x=[h["step"] for h in hist], y=ys, mode="lines+markers", name=label))
    fig.update_layout(
        height=280,
        margin=dict(l=10, r=10, t=30, b=10),
        title=f"{run['variant']}: training curve",
        xaxis_title="step",
        yaxis=dict(type="log", title="term (log)"),
        legend=dict(orientation="h", y=-0.3),
    )
    st.plotly_chart(fig, key=key, width="stretch")


def runs_table(all_runs: list[dict]) -> None:
    WG.table(
        pd.DataFrame(
            [
                {
                    "variant": r["variant"],
                    "target": r["target"],
                    "status": r["status"],
                    "steps": f"{r['step']}/{r['steps']}",
                    "mode": r["config"].get("forget_mode"),
                    "margin": r["config"].get("margin"),
                    "retain w": r["config"].get("retain_weight"),
                    "lm w": r["config"].get("lm_weight"),
                    "lr": r["config"].get("lr"),
                    "forget": (r.get("last") or {}).get("forget_loss"),
                    "retain": (r.get("last") or {}).get("retain_loss"),
                }
                for r in all_runs
            ]
        )
    )


@st.fragment(run_every=1.0)
def progress(name: str) -> None:
    try:
        r = CN.call("persist_run", name)
    except Exception as e:  # noqa: BLE001 - shown, and the fragment retries
        ER.show_error(e, "the persistent run's progress")
        return
    if r["status"] not in RUNNING:
        st.rerun(scope="app")
    last = r.get("last") or {}
    losses = (
        f" · forget {last['forget_loss']:.3g}, retain {last['retain_loss']:.3g}, lm {last.get('lm_loss', 0):.3g}"
        if last
        else ""
    )
    st.progress(
        r["step"] / max(1, r["steps"]),
        text=f"persist:{name} {r['status']}: step {r['step']} / {r['steps']} · ETA {R.fmt_eta(r.get('eta_s'))}{losses}",
    )
    curve(r, key=f"persist_live_{name}")
    if st.button("Cancel the persistent run", key=f"persist_cancel_{name}"):
        try:
            CN.call("cancel_persist", name, retry=False)
        except Exception as e:  # noqa: BLE001
            ER.show_error(e, "cancelling")


def _form(target: dict) -> None:
    c = st.columns(6)
    name = c[0].text_input("Run name", f"{target['name']}-persist", key="persist_name")
    mode = c[1].selectbox("Forget term", [None, "suppress", "clamp"], key="persist_mode", format_func=_mode_words)
    fields = {
        "forget_mode": mode,
        "steps": c[2].number_input("Steps", 1, 100_000, value=None, key="persist_steps"),
        "margin": c[3].number_input("Margin", 0.0, 1e6, value=None, key="persist_margin"),
        "retain_weight": c[4].number_input("Retain weight", 0.0, 1e7, value=None, key="persist_rw"),
        "lr": c[5].number_input("Learning rate", 0.0, 1.0, value=None, format="%.6f", key="persist_lr"),
    }
    if st.button(f"Train a persistent run on {target['name']}", key="persist_train"):
        body = {k: v for k, v in fields.items() if v is not None}
        run = ER.attempt(
            lambda: CN.call("train_persist", name, target["name"], retry=False, **body),
            "the persistent run",
            spinner="Submitting the persistent run…",
        )
        if run is not None:
            st.rerun()


def _mode_words(m: str | None) -> str:
    return {
        None: "the model's default",
        "suppress": "suppress: activations to -margin",
        "clamp": "clamp: the clamp's residual",
    }[m]


def panel(target: dict | None) -> None:
    """Train the persistent method on the current target and watch its curve; finished runs become
    model variants ``persist:<name>`` that a sweep, the Clamp explorer and the attack bench take."""
    all_runs = runs()
    active = [r for r in all_runs if r["status"] in RUNNING]
    with st.expander("Persistent: the clamp's features suppressed in the weights (CRISP-style)", expanded=bool(active)):
        st.markdown(
            "A clamp is a hook: whoever holds the weights can take it off. This fine-tunes the MLP output "
            "weights of the blocks up to the SAE's layer so that, on the target's forget text, its selected "
            "features stop firing (or the residual becomes what the clamp makes of it), while on its retain "
            "text the residual stays as it was. A finished run is the model variant `persist:<name>`: add it "
            "to a sweep below, compare it on the Clamp explorer, or attack it on the Robustness page. "
            "Blank fields take the model's defaults (chosen on the train half)."
        )
        if all_runs:
            runs_table(all_runs)
            done = [r for r in all_runs if r["status"] == "done"]
            if done:
                pick = st.selectbox("Training curve of", [r["name"] for r in done], key="persist_curve")
                curve(next(r for r in done if r["name"] == pick), key="persist_curve_plot")
        for r in active:
            progress(r["name"])
        if target is None:
            st.info("Choose a target in the sidebar to train a persistent run on it.")
            return
        _form(target)
