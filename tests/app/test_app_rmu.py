"""RMU in the app (AppTest against the shared tiny-backend server): a run trained from the batch
page's panel, then evaluated in a sweep beside the clamp (its own score and Figure-5 series), and
compared with the base model and the clamp on one question in the clamp explorer."""

from __future__ import annotations

import pytest
from test_app import (  # noqa: F401 (fixtures)
    QID,
    app_env,
    ok,
    page,
    paper_sweep_form,
    prob_table,
    run_small_paper_sweep,
    server,
)

from unlearn_core.server.client import UnlearnClient

NAME = "app-rmu"


@pytest.fixture(scope="module")
def trained(server):
    """rmu:app-rmu trained from the batch page's panel (the tiny backend's default settings)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNLEARN_SERVER_URL", server["url"])
        mp.delenv("UNLEARN_TOKEN", raising=False)
        at = ok(page("batch").run())
        at.text_input(key="rmu_name").input(NAME)
        at.number_input(key="rmu_steps").set_value(20)
        ok(at.run())
        at.button(key="rmu_train").click()
        ok(at.run())
    c = UnlearnClient(server["url"], token="")
    r = c.wait_rmu(NAME, timeout=900)
    assert r["status"] == "done" and r["step"] == 20 and r["target"] == "bio-basics", r
    # the pages' model picker caches the server's finished runs for 10 s (st.cache_data, shared by
    # every AppTest in this process): a page loaded just before the run finished must not hide it
    from unlearn_core.ui.pickers import _finished_variants

    _finished_variants.clear()
    return f"rmu:{NAME}"


def test_rmu_run_trained_from_the_panel_is_listed(app_env, trained):
    at = ok(page("batch").run())
    table = next(df.value for df in at.dataframe if "variant" in df.value.columns)
    row = table[table["variant"] == trained].iloc[0]
    assert row["status"] == "done" and row["steps"] == "20/20"
    assert trained in at.multiselect(key="b_variants").options


def test_sweep_with_the_rmu_model_scores_it_beside_the_clamp(app_env, trained):
    at = paper_sweep_form()
    at.multiselect(key="b_variants").set_value([trained])
    ok(at.run())
    assert any("+ 1 fine-tuned model(s)" in c.value for c in at.caption)
    run_small_paper_sweep(at)
    scores = next(df.value for df in at.dataframe if "unlearning score" in df.value.columns)
    assert set(scores["mode"]) >= {"rmu"} and len(scores) == 2  # the clamp and RMU, each scored
    results = next(df.value for df in at.dataframe if "forget_accuracy" in df.value.columns)
    assert trained in set(results["config"])
    fig = next(c for c in at.get("plotly_chart"))
    assert "rmu, this run (" in fig.proto.spec  # RMU is its own series on Figure 5


def test_clamp_explorer_compares_base_rmu_and_clamp(app_env, trained):
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="70").run())
    at.selectbox(key="variant").set_value(trained)
    ok(at.run())
    table = prob_table(at)
    assert "| base |" in table and f"| {trained} |" in table and "| intervened (c=70) |" in table
    labels = [m.label for m in at.metric]
    assert f"P(correct) on {trained}" in labels
    at.slider(key="c").set_value(80)  # the RMU row does not depend on c: read from the app's cache
    ok(at.run())
    assert f"| {trained} |" in prob_table(at) and "intervened (c=80)" in prob_table(at)


def test_feature_search_and_highlighting_read_features_on_the_rmu_model(app_env, server, trained):
    """The model picker: the pages' numbers are the RMU model's (the server's answer for that
    variant), not the model as loaded's."""
    c = UnlearnClient(server["url"], token="")
    text = "The virus spreads quickly and infects the lungs."
    tables = {}
    for model in ("base", trained):
        at = page("search", by="text", model=model)
        at.session_state["search_text"] = text
        ok(at.run())
        assert at.selectbox(key="model").value == model
        tables[model] = next(df.value for df in at.dataframe if "max_act" in df.value.columns)
    assert any(f"on **{trained}**" in cap.value for cap in at.caption)
    for model, table in tables.items():
        want = c.search(text, k=15, variant=model)["features"]
        assert list(table["feature"]) == [r["feature"] for r in want], model
        assert list(table["max_act"]) == pytest.approx([r["max_act"] for r in want], abs=1e-6)
    assert list(tables["base"]["max_act"]) != pytest.approx(list(tables[trained]["max_act"]), abs=1e-6)

    at = page("tokens", src="own text", model=trained)
    at.session_state["own_text"] = text
    ok(at.run())
    acts = c.activations(text, top_k=8, variant=trained)
    pos = at.select_slider(key="pos").value
    top = next(df.value for df in at.dataframe if "activation" in df.value.columns)
    assert list(top["feature"]) == [f for f, _ in acts["top_features"][pos]]
    assert list(top["activation"]) == pytest.approx([v for _, v in acts["top_features"][pos]], abs=1e-6)


def test_clamp_on_top_of_the_rmu_model(app_env, server, trained):
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="70").run())
    at.selectbox(key="variant").set_value(trained)
    ok(at.run())
    at.checkbox(key="on_top").check()
    ok(at.run())
    table = prob_table(at)
    assert "| base |" in table and f"| {trained} |" in table and f"| {trained} + clamp (c=70) |" in table
    want = UnlearnClient(server["url"], token="").mcq(
        QID, "wmdp-bio", [{"features": [2, 3], "value": 70.0}], values=[70.0], variant=trained
    )
    p = want["curve"][0]["score"]["probs"][want["question"]["answer"]]
    assert any(m.label.startswith("P(correct answer") and m.value == f"{p:.4f}" for m in at.metric)


def test_sweep_with_clamps_on_top_of_the_rmu_model(app_env, trained):
    at = paper_sweep_form()
    at.selectbox(key="b_model").set_value(trained)
    ok(at.run())
    assert any(f", on {trained}" in c.value for c in at.caption)
    run_small_paper_sweep(at)
    results = next(df.value for df in at.dataframe if "forget_accuracy" in df.value.columns)
    assert set(results["model"]) == {trained}  # the clean row and every clamp ran on the RMU model
