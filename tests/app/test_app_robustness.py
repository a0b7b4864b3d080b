"""The Robustness page (AppTest) against a tiny-backend server that knows ``bio-tiny``: a finished
attack run's heat map and drill-down, as the server stored them (cells, retain column, the fact
table's probabilities, the relearning curve), reopened from the URL; bad links say so; the form
starts a run; a cancelled run resumes from the page. Plus the page's pure helpers."""

from __future__ import annotations

import json

import pytest
from robustness_helpers import RUN, TARGET, finished_run, robustness_server
from streamlit.testing.v1 import AppTest
from test_app import ROOT, TIMEOUT, ok

from unlearn_core.ui import robustness as RB

PAGE = "pages/5_Robustness.py"


@pytest.fixture(scope="module")
def served(request, tmp_path_factory, shared_data):
    """The server and one finished run: three defences x (two probe attacks, filler, relearn)."""
    s = robustness_server(request, tmp_path_factory)
    s["result"] = finished_run(s["client"], {**RUN, "attacks": [*RUN["attacks"], "relearn"]})
    return s


@pytest.fixture
def app_env(served, monkeypatch):
    monkeypatch.setenv("UNLEARN_SERVER_URL", served["url"])
    monkeypatch.delenv("UNLEARN_TOKEN", raising=False)
    return served


def page(**query) -> AppTest:
    at = AppTest.from_file(str(ROOT / PAGE), default_timeout=TIMEOUT)
    for k, v in {"target": TARGET, **query}.items():
        at.query_params[k] = v
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def facts_table(at: AppTest):
    return next(df.value for df in at.dataframe if "P clean" in df.value.columns)


def test_the_heat_map_shows_every_cell_of_the_stored_run(app_env):
    result = app_env["result"]
    at = ok(page(run=result["id"]).run())
    heat = charts(at)[0]
    cells = next(t for t in heat["data"] if t.get("name") == "cells")
    got = {tuple(c): text for c, text in zip(cells["customdata"], cells["text"])}
    want = {(r["defence"], r["attack"]): r for r in result["rows"]}
    assert set(got) == set(want) and len(want) == 3 * 5  # 3 defences x (3 attacks + relearn's two rows)
    for key, r in want.items():
        assert got[key] == (f"{r['n_recovered']}/{r['n_forgotten']}" if r["n_forgotten"] else "—"), key
    assert got[("default", "rephrase")] != "—" and got[("none", "rephrase")] == "—"  # forgotten, and the control
    z = next(t for t in heat["data"] if t.get("colorscale") and t.get("zmax") == 1 and t.get("showscale") is not False)
    assert z["z"][0][0] == pytest.approx(want[("default", "rephrase")]["recovery_rate"])
    retain = next(t for t in heat["data"] if t.get("x") == ["retain acc."])
    assert [row[0] for row in retain["z"]] == pytest.approx(
        [want[(d, "rephrase")]["retain_acc"] for d in RUN["defences"]]
    )
    assert any(f"{result['n_known_forget']} known forget questions" in c.value for c in at.caption)


def test_the_drill_down_is_the_cells_facts_and_the_url_reopens_it(app_env):
    result = app_env["result"]
    row = next(r for r in result["rows"] if (r["defence"], r["attack"]) == ("default", "fill_blank"))
    at = ok(page(run=result["id"], defence="default", attack="fill_blank").run())
    assert at.selectbox(key="defence").value == "default" and at.selectbox(key="attack").value == "fill_blank"
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Facts"], metrics["Forgotten"], metrics["Recovered"]) == tuple(
        str(row[k]) for k in ("n_facts", "n_forgotten", "n_recovered")
    )
    table = facts_table(at)
    by_id = {f["source_id"]: f for f in row["facts"]}
    assert len(table) == len(by_id) and row["n_forgotten"] > 0
    for _, t in table.iterrows():
        f = by_id[t["fact"]]
        assert (t["P clean"], t["P defended"], t["P attacked"]) == pytest.approx(
            (f["p_clean"], f["p_defended"], f["p_attacked"])
        )
        assert (t["original question"], t["attacked form"]) == (f["original"], f["attacked"])
        assert (t["forgotten"], t["recovered"]) == (f["forgotten"], f["recovered"])
    assert list(table["recovered"]) == sorted(table["recovered"], reverse=True)  # the recovered facts first
    assert [at.query_params[k] for k in ("run", "defence", "attack")] == [result["id"], "default", "fill_blank"]
    at.toggle(key="rb_only_forgotten").set_value(True)
    ok(at.run())
    assert len(facts_table(at)) == row["n_forgotten"]


def test_a_relearning_cell_draws_its_curve(app_env):
    result = app_env["result"]
    row = next(r for r in result["rows"] if (r["defence"], r["attack"]) == ("default", "relearn:facts"))
    at = ok(page(run=result["id"], defence="default", attack="relearn:facts").run())
    curve = charts(at)[1]
    assert len(curve["data"]) == len({p["lr"] for p in row["curve"]}) >= 1
    for trace in curve["data"]:
        pts = sorted((p for p in row["curve"] if f"lr {p['lr']:g}" in trace["name"]), key=lambda p: p["step"])
        assert trace["x"] == [p["step"] for p in pts] and trace["y"] == pytest.approx([p["v_acc"] for p in pts])
    assert any(f"scored on V ({row['n_V']} forgotten facts" in c.value for c in at.caption)


def test_bad_links_say_what_was_not_used(app_env):
    at = ok(page(run="20990101-000000-nope", defence="bogus", attack="x" * 300).run())
    warnings = "\n".join(w.value for w in at.warning)
    assert "The link's `run=20990101-000000-nope` was not used for **Attack run**" in warnings
    assert "`defence=bogus` was not used for **Defence**" in warnings and "`attack=" in warnings
    assert at.selectbox(key="run").value == app_env["result"]["id"]  # the newest run instead
    assert facts_table(at) is not None


def test_the_page_runs_through_the_app_navigation(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["target"] = TARGET
    ok(at.run())
    at.switch_page(PAGE)
    ok(at.run())
    assert [t.value for t in at.title] == ["Robustness"] and charts(at)


def test_the_form_starts_a_run_and_a_cancelled_run_resumes(app_env):
    client = app_env["client"]
    at = ok(page(run=app_env["result"]["id"]).run())
    at.multiselect(key="rb_defences").set_value(["none"])
    at.multiselect(key="rb_attacks").set_value(["rephrase"])
    at.button(key="rb_start").click()
    ok(at.run())
    new = at.selectbox(key="run").value
    assert new != app_env["result"]["id"]
    spec = client.attack_run(new)
    assert (spec["target"], spec["defences"], spec["attacks"]) == (TARGET, ["none"], ["rephrase"])
    assert client.wait_attack(new, timeout=300, poll=0.2)["status"] == "done"

    slow = client.start_attack(TARGET, ["none"], ["rephrase", "filler"], delay_per_row=10.0)
    client.cancel_attack(slow["id"])
    assert client.wait_attack(slow["id"], timeout=300, poll=0.2)["status"] == "cancelled"
    at = ok(page(run=slow["id"]).run())
    assert any("cancelled after" in w.value for w in at.warning)
    at.button(key="rb_resume").click()
    ok(at.run())
    assert client.attack_run(slow["id"])["status"] in ("queued", "running")
    client.cancel_attack(slow["id"])  # the worker is free again for the other tests


def test_the_pure_helpers():
    rows = [
        {
            "defence": "d",
            "attack": "a",
            "n_forgotten": 4,
            "n_recovered": 1,
            "retain_acc": 0.9,
            "n_retain": 10,
            "retain_form": "attacked",
        },
        {
            "defence": "d",
            "attack": "b",
            "n_forgotten": 0,
            "n_recovered": 0,
            "retain_acc": 0.8,
            "n_retain": 9,
            "retain_form": "original wording",
        },
    ]
    g = RB.grid({"rows": rows})
    assert (g.defences, g.attacks) == (["d"], ["a", "b"])
    assert [RB.cell_text(r) for r in rows] == ["1/4", "—"] and RB.cell_text(None) == ""
    assert RB.retain_column({"rows": rows}, g) == [(0.8, 9, "original wording")]  # own wording first
    assert RB.picked_cell({"selection": {"points": [{"customdata": ["d", "b"]}]}}) == ("d", "b")
    assert RB.picked_cell({"selection": {"points": []}}) is None and RB.picked_cell(None) is None
    run = {"done": 2, "total": 6, "status": "running", "phase": "rows", "current": "d × b", "eta_s": 75.0}
    assert RB.progress(run) == (pytest.approx(1 / 3), "running: 2 of 6 rows done · now: d × b · ETA 1 min 15 s")
    assert "finding the facts" in RB.progress({**run, "phase": "known questions"})[1]
