"""The persistent method in the app (AppTest against the shared tiny-backend server): a run trained
from the batch page's panel, its training curve, and the variant offered wherever RMU's is (the
sweep's models, the Clamp explorer's comparison, the Robustness page's defences)."""

from __future__ import annotations

import pytest
from test_app import QID, app_env, ok, page, prob_table, server  # noqa: F401 (fixtures)

from unlearn_core.server.client import UnlearnClient

NAME = "app-persist"


@pytest.fixture(scope="module")
def trained(server):
    """persist:app-persist trained from the batch page's panel (the tiny backend's defaults, 12 steps)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNLEARN_SERVER_URL", server["url"])
        mp.delenv("UNLEARN_TOKEN", raising=False)
        at = ok(page("batch").run())
        at.text_input(key="persist_name").input(NAME)
        at.number_input(key="persist_steps").set_value(12)
        ok(at.run())
        at.button(key="persist_train").click()
        ok(at.run())
    c = UnlearnClient(server["url"], token="")
    r = c.wait_persist(NAME, timeout=900)
    assert r["status"] == "done" and r["step"] == 12 and r["target"] == "bio-basics", r
    from unlearn_core.ui.pickers import _finished_variants

    _finished_variants.clear()  # the pages' picker caches the finished runs for 10 s
    return f"persist:{NAME}"


def test_run_is_listed_with_its_training_curve(app_env, trained):
    at = ok(page("batch").run())
    table = next(df.value for df in at.dataframe if "variant" in df.value.columns and "margin" in df.value.columns)
    row = table[table["variant"] == trained].iloc[0]
    assert row["status"] == "done" and row["steps"] == "12/12"
    assert at.selectbox(key="persist_curve").value == NAME
    spec = next(c.proto.spec for c in at.get("plotly_chart") if "training curve" in c.proto.spec)
    assert f"{trained}: training curve" in spec and "forget: selected features" in spec
    assert trained in at.multiselect(key="b_variants").options
    assert f"{trained} (clamps on top of it)" in at.selectbox(key="b_model").options


def test_clamp_explorer_compares_the_persistent_model(app_env, trained):
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="70").run())
    at.selectbox(key="variant").set_value(trained)
    ok(at.run())
    table = prob_table(at)
    assert "| base |" in table and f"| {trained} |" in table and "| intervened (c=70) |" in table
    assert f"P(correct) on {trained}" in [m.label for m in at.metric]


def test_robustness_page_offers_it_as_a_defence(app_env, trained):
    at = ok(page("robust").run())
    assert f"{trained}: a finished persistent SAE-guided run" in at.multiselect(key="rb_defences").options
