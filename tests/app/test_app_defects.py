"""Defects a new user saw in a real browser (issue 13), checked with AppTest against the shared
tiny-backend server, and on the pure figure builder.

Defect 7 (Batch evaluation): Figure 5's axes ran 0-2 when the points coincide; the number of
questions behind each accuracy was off-screen (a "score 0.000" came from 2 questions).
"""

from __future__ import annotations

import json

import pytest
from browser_helpers import ROOT
from streamlit.testing.v1 import AppTest
from test_app import app_env, server  # noqa: F401  (fixtures)

from unlearn_core.ui import figures as FIG

TIMEOUT = 60
BATCH = str(ROOT / "pages" / "4_Batch_evaluation.py")
SPEC = {
    "thresholds": [0.5],
    "ns": [1, 2],
    "values": [20.0],
    "question_limit": 2,
    "known": False,
    "side_effect_sets": ["mmlu:high_school_geography"],
    "selection_tokens": 600,
    "loss_tokens": 0,
}


@pytest.fixture(scope="module")
def small_job(server):
    """A finished sweep whose accuracies rest on 2 questions per set."""
    from unlearn_core.server.client import UnlearnClient

    c = UnlearnClient(server["url"], token="")
    job = c.submit_job(SPEC)["id"]
    assert c.wait_job(job, timeout=900)["status"] == "done"
    return job


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def batch_page(**query) -> AppTest:
    at = AppTest.from_file(BATCH, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def axis_range(layout: dict, name: str) -> list[float]:
    r = (layout.get(name) or {}).get("range")
    assert r is not None, f"{name} has no fixed range (plotly autoranges a single value to v±1)"
    return list(r)


def check_accuracy_axis(r: list[float]) -> None:
    lo, hi = r
    assert -0.06 <= lo <= 0 and 1 < hi <= 1.1, r  # accuracies live in [0, 1]


def coinciding_rows(acc: float = 1.0, loss: float | None = 0.0) -> list[dict]:
    row = {"forget_accuracy": acc, "side_effect_mean": acc, "loss_added": loss, "forget_n": 2, "side_n": 2}
    return [{"config": "none", **row}, {"config": "t=0.5|n=1|c=20", **row}, {"config": "t=0.5|n=2|c=20", **row}]


# ---------------------------------------------------------------- defect 7: Figure 5's axes


@pytest.mark.parametrize("acc", [1.0, 0.0, 0.5])
def test_figure5_axes_have_a_sensible_range_when_the_points_coincide(acc):
    layout = FIG.figure5({"run a": coinciding_rows(acc)}).to_plotly_json()["layout"]
    check_accuracy_axis(axis_range(layout, "xaxis"))  # side-effect accuracy
    check_accuracy_axis(axis_range(layout, "yaxis"))  # forget accuracy, left plot
    check_accuracy_axis(axis_range(layout, "yaxis2"))  # forget accuracy, right plot
    lo, hi = axis_range(layout, "xaxis2")  # loss added: all 0.0
    assert hi - lo > 0 and lo <= 0 <= hi and hi - lo < 1, (lo, hi)


def test_figure5_loss_axis_spans_the_points_with_a_margin():
    rows = coinciding_rows(0.5, loss=0.25)
    rows[0]["loss_added"] = 0.0
    layout = FIG.figure5({"run a": rows}).to_plotly_json()["layout"]
    lo, hi = axis_range(layout, "xaxis2")
    assert lo < 0 and 0.25 < hi < 0.5, (lo, hi)
    all_same = FIG.figure5({"run a": coinciding_rows(0.5, loss=0.3)}).to_plotly_json()["layout"]
    lo, hi = axis_range(all_same, "xaxis2")
    assert lo < 0.3 < hi and hi - lo < 1, (lo, hi)


# ---------------------------------------------------------------- defect 7: how many questions


def test_batch_results_show_how_many_questions_each_accuracy_rests_on(app_env, small_job):
    at = ok(batch_page(job=small_job).run())
    df = next(d.value for d in at.dataframe if "forget_accuracy" in d.value.columns)
    cols = list(df.columns)
    # the counts sit right next to the accuracies, among the first columns (no horizontal scroll)
    assert {"forget_n", "side_n"} <= set(cols[:6]), cols
    assert cols.index("forget_n") == cols.index("forget_accuracy") + 1
    assert cols.index("side_n") == cols.index("side_effect_mean") + 1
    assert (df["forget_n"] == 2).all() and (df["side_n"] == 2).all()
    # next to the score and the clean accuracies
    captions = "\n".join(c.value for c in at.caption)
    assert "2 forget questions" in captions, captions
    # a warning: the score rests on fewer than 10 questions
    warnings = "\n".join(w.value for w in at.warning)
    assert "2 forget questions" in warnings and "fewer than 10" in warnings, warnings
    # the hover text of every Figure 5 marker gives the counts, and the accuracy axes are fixed
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    hovers = [t.get("hovertext") for t in fig["data"] if t.get("hoverinfo") != "skip"]  # not the placeholder
    assert hovers and all(h for h in hovers), hovers
    assert all("n=2" in h for hs in hovers for h in hs), hovers
    check_accuracy_axis(axis_range(fig["layout"], "yaxis"))
    check_accuracy_axis(axis_range(fig["layout"], "xaxis"))


def test_batch_no_few_questions_warning_when_there_are_enough(app_env):
    from unlearn_core.server.client import UnlearnClient

    c = UnlearnClient(app_env["url"], token="")
    job = c.submit_job({**SPEC, "ns": [1], "question_limit": 12, "forget_set": "mmlu:human_aging"})["id"]
    assert c.wait_job(job, timeout=900)["status"] == "done"
    at = ok(batch_page(job=job).run())
    df = next(d.value for d in at.dataframe if "forget_accuracy" in d.value.columns)
    assert (df["forget_n"] == 12).all()
    assert not any("fewer than 10" in w.value for w in at.warning)
    assert any("12 forget questions" in c.value for c in at.caption)


def test_batch_progress_shows_the_phase_when_the_server_gives_one(app_env, monkeypatch):
    from unlearn_core.server.client import UnlearnClient
    from unlearn_core.ui import connection as CN

    c = UnlearnClient(app_env["url"], token="")
    job = c.submit_job({**SPEC, "delay_per_config": 1.5})["id"]
    real = CN.call

    def call(method, *a, **k):
        out = real(method, *a, **k)
        if method == "job" and isinstance(out, dict):
            out = {**out, "phase": "scoring the retain questions"}
        return out

    monkeypatch.setattr(CN, "call", call)
    try:
        at = ok(batch_page(job=job).run())
        bar = at.get("progress")
        assert bar and "scoring the retain questions" in bar[0].proto.text, bar and bar[0].proto.text
    finally:
        c.cancel_job(job)
        c.wait_job(job, timeout=900)


# ---------------------------------------------------------------- defect 9b: Home's "Model" card


def test_home_model_card_fits_the_embedded_model_name(app_env, monkeypatch):
    """'embedded:gemma-3-270m' was cut to 'embedd…' on Home's five-column metric row."""
    from unlearn_core.ui import page as PG

    real = PG.require_server
    monkeypatch.setattr(PG, "require_server", lambda: {**real(), "model": "embedded:gemma-3-270m"})
    at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())
    card = next(m for m in at.metric if m.label.startswith("Model"))
    assert card.value == "gemma-3-270m" and "embedded" in card.label, (card.label, card.value)
