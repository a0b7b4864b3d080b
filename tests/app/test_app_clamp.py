"""Defects a new user hit on the Clamp explorer and the URL state (issue 13), as AppTests against
the shared tiny-backend server. Each test failed before its fix."""

from __future__ import annotations

import html
import json
import re

import pytest
from test_app import QID, app_env, ok, page, prob_table, server  # noqa: F401  (fixtures)

from unlearn_core.ui import render as R


def warnings_text(at) -> str:
    return "\n".join(w.value for w in at.warning)


def test_slider_keeps_the_latest_press_when_the_query_string_lags(app_env):
    """Defect 5: a rerun request carries the browser's query string, which can still hold a value
    the app wrote a run earlier. That value must not count as a link and snap the slider back."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="70").run())
    at.slider(key="c").set_value(71)
    ok(at.run())
    assert at.query_params["c"] == "71"
    at.query_params["c"] = "70"  # the stale query string of the earlier run
    at.slider(key="c").set_value(72)
    ok(at.run())
    assert at.slider(key="c").value == 72
    assert at.query_params["c"] == "72"
    assert "intervened (c=72)" in prob_table(at)
    assert "was not used" not in warnings_text(at)


def test_a_link_into_the_page_still_wins(app_env):
    """The fix for defect 5 must not make links stale: a value this session never wrote is taken."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="70").run())
    at.query_params["c"] = "333"
    ok(at.run())
    assert at.slider(key="c").value == 333 and "intervened (c=333)" in prob_table(at)


def test_bad_link_values_are_reported_not_dropped_silently(app_env):
    """Defect 6: c=999999, an unknown question id and an unknown mode each get a visible warning
    naming the value, and the page still works from the defaults."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q="no-such-question", c="999999", mode="bogus").run())
    w = warnings_text(at)
    assert "`c=999999`" in w and "out of range (allowed: 0 to 1000)" in w
    assert "`q=no-such-question`" in w
    assert "`mode=bogus`" in w and "not one of the choices" in w
    assert at.slider(key="c").value == 20 and at.selectbox(key="mode").value == "clamp"
    assert "intervened (c=20)" in prob_table(at)
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="abc").run())
    assert "`c=abc`" in warnings_text(at) and "not a whole number" in warnings_text(at)
    good = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="40", mode="zero").run())
    assert "was not used" not in warnings_text(good)


@pytest.mark.parametrize("bad, why", [("-5", "out of range"), ("abc", "not a whole number")])
def test_bad_feature_id_in_a_feature_search_link_is_reported(app_env, bad, why):
    """Issue 35, defect 13: the dashboard's feature id starts empty, and the warning says so (it
    said "It starts at `None` instead")."""
    at = ok(page("search", by="id", f=bad, ntok="600").run())
    assert f"`f={bad}`" in warnings_text(at) and why in warnings_text(at)
    assert "It starts empty instead." in warnings_text(at) and "None" not in warnings_text(at)


def test_feature_sets_survive_a_reload_through_the_url(app_env):
    """Defect 6, second half: named feature sets vanished on reload (they lived only in the
    browser session). They are in ?sets= now, written on every run and read by a new session."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID).run())
    at.session_state["feature_sets"] = {
        "bio": [{"sae": "tiny", "feature": 2}, {"sae": "tiny", "feature": 3}],
        "other|x": [{"sae": "tiny", "feature": 5}],
    }
    ok(at.run())
    raw = at.query_params["sets"]
    assert raw == "bio~2, 3|other-x~5"
    fresh = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, sets=raw).run())  # a reload: a new session
    assert fresh.session_state["feature_sets"] == {
        "bio": [{"sae": "tiny", "feature": 2}, {"sae": "tiny", "feature": 3}],
        "other-x": [{"sae": "tiny", "feature": 5}],
    }
    sidebar = "\n".join(m.value for m in fresh.sidebar.markdown)
    assert "**bio** (2)" in sidebar and "**other-x** (1)" in sidebar
    broken = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, sets="no separator").run())
    assert "could not be read" in "\n".join(w.value for w in broken.sidebar.warning)


def test_feature_set_encoding_round_trips():
    sets = {"a": [("tiny", 1), ("tiny", 20)], "b c": [("other:sae", 7)]}
    raw = R.encode_feature_sets(sets, "tiny")
    assert raw == "a~1, 20|b c~other:sae:7"
    assert R.decode_feature_sets(raw, "tiny") == sets
    assert R.decode_feature_sets("", "tiny") == {}
    with pytest.raises(ValueError):
        R.decode_feature_sets("a~1|nosep", "tiny")


def test_generation_prompt_follows_the_question(app_env):
    """Defect 2: the generation prompt kept the previous question's text, so 'Generate both'
    answered a question not on screen."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID).run())
    q1 = at.selectbox(key="q").value
    first_prompt = next(t for t in at.text_area if t.key.startswith("gen_prompt")).value
    opts = at.selectbox(key="q").options
    assert len(opts) > 1
    at.selectbox(key="q").select_index(1)
    ok(at.run())
    q2 = at.selectbox(key="q").value
    assert q2 != q1
    area2 = next(t for t in at.text_area if t.key.startswith("gen_prompt"))
    exp = [e for e in at.expander if e.label == "The question"][0]
    shown = exp.markdown[0].value.strip("*")
    assert shown[:40] in area2.value and area2.value != first_prompt
    # the table's caption names the question it scored (bench/browser_slider.py times a switch by it)
    assert any(c.value.startswith(f"Question {q2} ·") for c in at.caption)
    assert not any(c.value.startswith(f"Question {q1} ·") for c in at.caption)


def test_activations_are_drawn_on_the_scored_prompt(app_env):
    """Defect 4: the heat map drew the bare lettered question, not the text the scorer reads (the
    tiny backend scores letters with the plain prompt: its header line must be there)."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID).run())
    heat = [m.value for m in at.markdown if 'class="uw-heat"' in m.value]
    assert heat, "no heat map"
    text = html.unescape(re.sub(r"<[^>]+>", "", heat[0]))
    assert "multiple choice questions" in text and text.rstrip().endswith("Answer:")
    assert any("exactly as letter scoring reads it" in c.value for c in at.caption)


def test_scored_texts_are_what_the_scorer_reads():
    """mcq.scored_texts for cloze is the question prefix + each choice, the rows cloze_logliks scores."""
    from unlearn_core.data.loaders import Question
    from unlearn_core.evaluation.mcq import cloze_prefix, format_prompt, scored_texts

    q = Question("x", "What is 2+2?", ("3", " 4 ", "5", "6"), 1, "math", "t")
    rows = scored_texts(q, "cloze", "plain")
    assert rows == [cloze_prefix(q) + " " + c.strip() for c in q.choices] and rows[1].endswith("Answer: 4")
    assert scored_texts(q, "letter", "plain") == [format_prompt(q, "plain")]
    chat = scored_texts(q, "letter", "chat")[0]
    assert not chat.startswith("<bos>") and "<start_of_turn>user" in chat


def test_clamp_explorer_curve_comes_in_chunks_and_the_slider_reuses_them(app_env, monkeypatch):
    """The curve is scored in short requests (it fills in as it comes); moving the slider then
    asks the server for the one new value only."""
    from unlearn_core.ui import connection as CN

    calls = []
    real = CN.call
    monkeypatch.setattr(
        CN,
        "call",
        lambda method, *a, **k: calls.append((method, tuple(k.get("values") or ()))) or real(method, *a, **k),
    )
    at = ok(page("clamp", features="3,6", qset="wmdp-bio", q=QID, c="57").run())
    curve_calls = [v for m, v in calls if m == "mcq" and len(v) > 1]
    assert [v for vs in curve_calls for v in vs] == [float(v) for v in range(0, 1001, 50)]
    assert max(len(v) for v in curve_calls) <= 7
    calls.clear()
    at.slider(key="c").set_value(58)
    ok(at.run())
    assert [(m, v) for m, v in calls if m == "mcq"] == [("mcq", (58.0,))]


def test_gate_display_shows_rho_tau_decision_and_the_tau_curve(app_env):
    """Mode gated with tau given: the page shows rho, tau and whether the gate is open, and a
    P(correct)-vs-tau curve whose step sits at rho; tau just above rho shuts the gate, and the
    intervened probabilities are then the base ones."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="200", mode="gated").run())
    at.segmented_control(key="gate_how").set_value("value")
    ok(at.run())
    at.number_input(key="gate_tau").set_value(0.0)
    ok(at.run())
    text = "\n".join(m.value for m in at.markdown)
    m = re.search(r"Gate: ρ = \*\*([0-9.]+)\*\*.*τ = \*\*([0-9.]+)\*\* → \*\*(open|shut)\*\*", text)
    assert m, text[-2000:]
    rho = float(m.group(1))
    assert 0 < rho <= 1 and float(m.group(2)) == 0.0 and m.group(3) == "open"
    curve = [c for c in at.get("plotly_chart") if "gate τ" in json.dumps(json.loads(c.proto.spec), ensure_ascii=False)]
    assert curve, "no P(correct)-vs-tau chart"
    assert "intervened (c=200)" in prob_table(at)
    at.number_input(key="gate_tau").set_value(min(1.0, round(rho + 0.01, 2)))
    ok(at.run())
    text = "\n".join(m.value for m in at.markdown)
    assert "→ **shut**" in text
    table = prob_table(at)
    rows = [ln for ln in table.splitlines() if ln.startswith("| base") or ln.startswith("| intervened")]
    assert len(rows) == 2 and rows[0].split("|")[2:] == rows[1].split("|")[2:], table  # shut: as the clean model


def test_a_link_with_tau_opens_the_gate_at_that_value(app_env):
    """The guided demo's link for a gated default carries its calibrated tau: the explorer uses
    that tau (not its own percentile on one corpus); a bad one is reported."""
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="40", mode="dsg", tau="0.2500").run())
    assert at.segmented_control(key="gate_how").value == "value"
    assert at.number_input(key="gate_tau").value == 0.25
    bad = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="40", mode="dsg", tau="7").run())
    assert "`tau=7`" in warnings_text(bad) and "out of range" in warnings_text(bad)
    assert bad.segmented_control(key="gate_how").value == "percentile"


def test_a_change_in_p_correct_is_not_coloured_as_good_or_bad(app_env):
    """Issue 35, defect 18: a drop in P(correct) was green (delta_color="inverse"): good on a forget
    question, a loss on a retain one. The metric's delta is grey now."""
    import streamlit.proto.Metric_pb2 as M

    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="300").run())
    deltas = [m for m in at.metric if "vs base" in m.proto.delta]
    assert deltas and all(m.proto.color == M.Metric.MetricColor.GRAY for m in deltas)


def test_tokens_in_scripts_without_fonts_are_named_not_drawn_as_boxes():
    """Issue 35, defect 18: the logit lens showed tokens of scripts the browser's fonts lack as boxes."""
    assert R.token_label(" the") == "' the'" and R.token_label("é") == "'é'"
    assert R.token_label("ന്ന") == "'ന്ന' (malayalam letter na, malayalam sign virama, …)"
    assert R.token_label("中") == "'中' (cjk unified ideograph-4e2d)"


def test_long_mode_names_neither_overflow_the_mode_box_nor_run_into_the_legend(app_env):
    """Issue 35, defect 14: in gated and DSG modes the curve's title ran into its legend and the
    Mode box cut its label off. The box shows short names; every figure's legend sits under it."""
    from unlearn_core.method.modes import MODE_LABELS, MODE_SHORT
    from unlearn_core.ui import figures as FIG

    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="300", mode="dsg").run())
    assert set(at.selectbox(key="mode").options) <= set(MODE_SHORT.values()) and at.selectbox(key="mode").value == "dsg"
    assert max(len(s) for s in MODE_SHORT.values()) <= 30 < max(len(s) for s in MODE_LABELS.values())
    fig = FIG.prob_curve([0.0, 100.0], [[0.25] * 4, [0.4, 0.2, 0.2, 0.2]], 0, mode_label=MODE_SHORT["dsg"])
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"
