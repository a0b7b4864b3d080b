"""Robustness: is the knowledge gone, or only hidden? The attack bench run as a server job (every
attack against every defence on the target's held-out facts), its defences x attacks heat map of
recovery with the retain accuracy beside it, and a drill-down to single facts."""

from __future__ import annotations

import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import nav as NV
from unlearn_core.ui import page as PG
from unlearn_core.ui import rmu_view as RV
from unlearn_core.ui import robustness_view as RBV
from unlearn_core.ui import target_picker as TP

NV.page_setup("Robustness")
st.title("Robustness")
PG.require_server()
TP.target_picker()
RBV.intro()

listing = ER.attempt(lambda: CN.call("attack_runs"), "the list of attack runs")
if listing is None:
    st.stop()
runs = listing["runs"]
RBV.start_form(TP.current_target(), listing["attacks"], RV.finished(), bool(runs))
if not runs:
    st.info("No attack run on this server yet: start one above.", icon=":material/info:")
    st.stop()

run_id = RBV.run_picker(runs)
run = next(r for r in runs if r["id"] == run_id)
RBV.status(run)
result = ER.attempt(lambda: CN.call("attack_result", run_id), f"attack run {run_id}")
if result is None or not result["rows"]:
    if result is not None:
        st.info("No row of this run is finished yet.")
    st.stop()
RBV.heat_map(result)
RBV.drill_down(result)
