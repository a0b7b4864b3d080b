"""RMU in the app: the finished runs (model variants rmu:<name>) to compare against, and a panel
that trains a run on the current target over the server, with progress, ETA and cancel."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import render as R
from unlearn_core.ui import widgets as WG

RUNNING = ("queued", "running")


def runs() -> list[dict]:
    """Every RMU run the server knows ([] when it cannot say: an older server, or an error shown)."""
    return ER.attempt(lambda: CN.call("rmu_runs"), "the RMU runs") or []


def finished(all_runs: list[dict] | None = None) -> list[str]:
    """The variants of the finished fine-tuned runs: RMU ('rmu:<name>') and, unless ``all_runs``
    (RMU's alone) is given, the persistent method's ('persist:<name>')."""
    if all_runs is None:
        persist = ER.attempt(lambda: CN.call("persist_runs"), "the persistent runs") or []
        all_runs = runs() + persist
    return [r["variant"] for r in all_runs if r["status"] == "done"]


def runs_table(all_runs: list[dict]) -> None:
    WG.table(
        pd.DataFrame(
            [
                {
                    "variant": r["variant"],
                    "target": r["target"],
                    "status": r["status"],
                    "steps": f"{r['step']}/{r['steps']}",
                    "layer": r["config"].get("layer"),
                    "updated": ",".join(map(str, r["config"].get("update_layers") or [])),
                    "c": r["config"].get("steering_coeff"),
                    "alpha": r["config"].get("alpha"),
                    "lr": r["config"].get("lr"),
                    "forget loss": (r.get("last") or {}).get("forget_loss"),
                    "retain loss": (r.get("last") or {}).get("retain_loss"),
                }
                for r in all_runs
            ]
        )
    )


@st.fragment(run_every=1.0)
def progress(name: str) -> None:
    try:
        r = CN.call("rmu_run", name)
    except Exception as e:  # noqa: BLE001 - shown, and the fragment retries
        ER.show_error(e, "the RMU run's progress")
        return
    if r["status"] not in RUNNING:
        st.rerun(scope="app")
    last = r.get("last") or {}
    losses = f" · forget loss {last['forget_loss']:.4g}, retain loss {last['retain_loss']:.4g}" if last else ""
    st.progress(
        r["step"] / max(1, r["steps"]),
        text=f"rmu:{name} {r['status']}: step {r['step']} / {r['steps']} · ETA {R.fmt_eta(r.get('eta_s'))}{losses}",
    )
    if st.button("Cancel the RMU run", key=f"rmu_cancel_{name}"):
        try:
            CN.call("cancel_rmu", name, retry=False)
        except Exception as e:  # noqa: BLE001
            ER.show_error(e, "cancelling")


def panel(target: dict | None) -> None:
    """Train RMU on the current target (its forget and retain corpora) and watch it; finished runs
    become model variants that a sweep evaluates next to the clamp configurations."""
    all_runs = runs()
    active = [r for r in all_runs if r["status"] in RUNNING]
    with st.expander("RMU: the fine-tuning baseline (train a run on the target)", expanded=bool(active)):
        st.markdown(
            "RMU (Li et al. 2024) fine-tunes the MLP output weights of a few layers so that, on the "
            "target's forget text, the residual stream at one layer points at a fixed random direction, "
            "while on its retain text it stays as it was. A finished run is the model variant "
            "`rmu:<name>`: add it to a sweep below to see it beside the clamps on the same questions. "
            "Blank fields take the model's defaults."
        )
        if all_runs:
            runs_table(all_runs)
        for r in active:
            progress(r["name"])
        if target is None:
            st.info("Choose a target in the sidebar to train RMU on it.")
            return
        c = st.columns(6)
        name = c[0].text_input("Run name", f"{target['name']}-rmu", key="rmu_name")
        fields = {
            "steps": c[1].number_input("Steps", 1, 100_000, value=None, key="rmu_steps"),
            "layer": c[2].number_input("Layer", 0, 1000, value=None, key="rmu_layer"),
            "steering_coeff": c[3].number_input("Coefficient c", 0.0, 1e7, value=None, key="rmu_c"),
            "alpha": c[4].number_input("Alpha", 0.0, 1e7, value=None, key="rmu_alpha"),
            "lr": c[5].number_input("Learning rate", 0.0, 1.0, value=None, format="%.6f", key="rmu_lr"),
        }
        if st.button(f"Train RMU on {target['name']}", key="rmu_train"):
            body = {k: v for k, v in fields.items() if v is not None}
            run = ER.attempt(
                lambda: CN.call("train_rmu", name, target["name"], retry=False, **body),
                "the RMU run",
                spinner="Submitting the RMU run…",
            )
            if run is not None:
                st.rerun()
