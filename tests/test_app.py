"""The Streamlit app with `streamlit.testing.v1.AppTest`, against a real tiny-backend server
process (started once per session), plus the pure view helpers.

Each page is run the way `streamlit run app.py` runs it (through app.py's navigation, with
``switch_page``) and also on its own (``AppTest.from_file("pages/...")``).
"""
from __future__ import annotations

import re
import time

import pytest
from streamlit.testing.v1 import AppTest

from browser_helpers import ROOT, closed_port_url, shared_tiny_server
from unlearn_core.ui import render as R

PAGES = {
    "search": "pages/1_Feature_search.py",
    "tokens": "pages/2_Token_highlighting.py",
    "clamp": "pages/3_Clamp_explorer.py",
    "batch": "pages/4_Batch_evaluation.py",
}
QID = "wmdp-bio:bio:5ef94a561c"  # first WMDP-bio question; short enough for the tiny model's context
TIMEOUT = 60


@pytest.fixture(scope="session")
def server(request, tmp_path_factory, shared_data):
    return shared_tiny_server(request, tmp_path_factory)


@pytest.fixture
def app_env(server, monkeypatch):
    monkeypatch.setenv("UNLEARN_SERVER_URL", server["url"])
    monkeypatch.delenv("UNLEARN_TOKEN", raising=False)
    return server


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(ROOT / (PAGES.get(name, name))), default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def prob_table(at: AppTest) -> str:
    tables = [m.value for m in at.markdown if m.value.startswith("| | A")]
    assert tables, "no probability table on the page"
    return tables[0]


# ---------------------------------------------------------------- pages


def test_home_shows_what_is_loaded_and_links_every_page(app_env):
    at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model"] == "tiny" and metrics["Device"] == "cpu" and metrics["dtype"] == "float32"
    assert "tiny test backend" in "\n".join(i.value for i in at.info)
    frames = [d.value for d in at.dataframe]
    assert any("blocks.0.hook_resid_post" in df.to_string() for df in frames)  # the SAE table
    sources = next(df for df in frames if "provided by" in df.columns)
    assert {"wmdp-bio", "mmlu", "webtext"} <= set(sources["source"])
    assert "WMDP-bio questions: real data" in "\n".join(s.value for s in at.success)
    links = {p.proto.page for p in at.get("page_link")}
    assert {"Feature_search", "Token_highlighting", "Clamp_explorer", "Batch_evaluation"} <= links


def test_every_page_runs_through_the_app_navigation(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update({"features": "2,3", "q": QID, "f": "2", "ntok": "600"})
    ok(at.run())
    titles = {}
    for name, path in PAGES.items():
        at.switch_page(path)
        ok(at.run())
        titles[name] = [t.value for t in at.title]
    assert titles == {"search": ["Feature search"], "tokens": ["Token highlighting"], "clamp": ["Clamp explorer"],
                      "batch": ["Batch evaluation"]}


def test_view_state_follows_the_user_across_pages(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    ok(at.run())
    at.switch_page(PAGES["clamp"])
    at.query_params.update({"features": "2,3", "c": "40", "mode": "add", "q": QID})
    ok(at.run())
    assert (at.text_input(key="features").value, at.slider(key="c").value, at.selectbox(key="mode").value) == (
        "2,3", 40, "add")
    at.slider(key="c").set_value(55)
    ok(at.run())
    at.switch_page(PAGES["tokens"])
    ok(at.run())
    assert at.text_input(key="features").value == "2,3" and at.selectbox(key="q").value == QID
    at.switch_page(PAGES["search"])
    ok(at.run())
    at.switch_page(PAGES["clamp"])
    ok(at.run())
    assert at.slider(key="c").value == 55 and at.selectbox(key="mode").value == "add"
    assert at.text_input(key="features").value == "2,3"


def test_feature_search_by_text_dashboard_and_feature_set(app_env):
    at = ok(page("search", ntok="600").run())
    assert at.segmented_control(key="by").value == "text"
    hits = at.dataframe[0].value
    assert {"feature", "score", "max_act", "top_token"} <= set(hits.columns) and len(hits) == 15
    first = int(hits["feature"].iloc[0])
    at.selectbox(key="pick_text").set_value(first)
    at.button(key="open_text").click()
    ok(at.run())
    assert at.number_input(key="f").value == first
    text = markdown_text(at)
    assert f"Feature {first} of tiny" in [s.value for s in at.subheader][0]
    assert "Automatic description" in text and "not a human or Neuronpedia explanation" in text
    assert "#### WebText" in text and "#### WMDP-bio" in text
    heat = [m.value for m in at.markdown if 'class="uw-heat"' in m.value]
    assert heat and re.search(r'title="#\d+ .*: \d+\.\d{3}"', heat[0])  # values on hover
    assert at.get("plotly_chart")  # the histogram
    at.button(key="set_text_add").click()
    ok(at.run())
    sets = at.session_state["feature_sets"]
    assert len(sets["my set"]) == 15 and sets["my set"][0] == {"sae": "tiny", "feature": first}


def test_feature_search_forget_retain_table(app_env):
    at = page("search", by="forget/retain", thr="0.5")
    ok(at.run())
    at.number_input(key="sel_tokens").set_value(600)
    at.button(key="run_sel").click()
    ok(at.run())
    df = at.dataframe[0].value
    assert {"feature", "forget_freq", "retain_freq"} <= set(df.columns) and len(df) > 0
    assert (df["retain_freq"] < 0.5).all()
    assert list(df["forget_freq"]) == sorted(df["forget_freq"], reverse=True)


def test_feature_search_by_explanation_says_which_source_answered(app_env):
    at = page("search", by="explanation")
    ok(at.run())
    at.number_input(key="xtok").set_value(600)
    at.select_slider(key="xthr").set_value(0.5)
    at.text_input(key="xq").input("fires")
    ok(at.run())
    assert any("no Neuronpedia id" in i.value for i in at.info)
    answered = [c.value for c in at.caption if "Answered by" in c.value]
    assert answered and "local automatic descriptions" in answered[0] and "not Neuronpedia" in answered[0]
    assert len(at.dataframe) == 1 and "explanation" in at.dataframe[0].value.columns


def test_token_highlighting_heatmap_token_features_and_answer(app_env):
    at = ok(page("tokens", features="2,3", q=QID).run())
    assert at.selectbox(key="q").value == QID
    heat = [m.value for m in at.markdown if 'class="uw-heat"' in m.value]
    assert len(heat) >= 3  # combined + one per feature
    assert "max over the 2 chosen feature(s)" in heat[0]
    assert any("Correct answer: **A." in s.value for s in at.success)
    table = at.dataframe[0].value
    assert list(table.columns) == ["feature", "activation", "chosen"]
    slider = at.select_slider(key="pos")
    other = 5 if slider.value != 5 else 6
    slider.set_value(other)
    ok(at.run())
    assert at.select_slider(key="pos").value == other
    assert not table.equals(at.dataframe[0].value)  # another token, other top features


def test_token_highlighting_own_text(app_env):
    at = page("tokens", src="own text")
    ok(at.run())
    at.text_area(key="own_text").input("Viruses replicate inside host cells.")
    ok(at.run())
    assert any("strongest feature at each token" in m.value for m in at.markdown)


def test_clamp_explorer_slider_changes_the_probabilities(app_env):
    at = ok(page("clamp", features="2,3,4", q=QID).run())
    assert at.slider(key="c").value == 20
    assert at.selectbox(key="mode").value == "clamp"
    before = prob_table(at)
    assert re.search(r"\| base \| (\*\*)?A 0\.\d{4}", before) and "intervened (c=20)" in before
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the grouped bars and the probability-vs-c curve
    at.slider(key="c").set_value(150)
    ok(at.run())
    after = prob_table(at)
    assert "intervened (c=150)" in after
    base_row = lambda t: next(line for line in t.splitlines() if line.startswith("| base"))  # noqa: E731
    inter_row = lambda t: next(line for line in t.splitlines() if line.startswith("| intervened"))  # noqa: E731
    assert base_row(before) == base_row(after)  # the clean model does not move
    assert inter_row(before).split("|")[2:6] != inter_row(after).split("|")[2:6]


def test_clamp_explorer_slider_reuses_the_cached_curve(app_env, monkeypatch):
    """Moving c rescores the bars only: the 21-value curve does not depend on c."""
    from unlearn_core.ui import common

    at = ok(page("clamp", features="3,5", q=QID).run())
    calls = []
    real = common.call
    monkeypatch.setattr(common, "call", lambda method, *a, **k: calls.append((method, len(k.get("values") or [])))
                        or real(method, *a, **k))
    at.slider(key="c").set_value(73)
    ok(at.run())
    assert "intervened (c=73)" in prob_table(at)
    assert ("mcq", 1) in calls  # the bars at the new value
    assert ("mcq", 21) not in calls  # the curve came from the cache
    assert len(at.get("plotly_chart")) == 2


def test_clamp_explorer_modes_loss_added_and_generation(app_env):
    at = ok(page("clamp", features="2,3,4", q=QID, mode="zero").run())
    assert at.slider(key="c").disabled
    assert "intervened (c=0)" in prob_table(at)
    assert any("Zero ablation has no c" in i.value for i in at.info)

    at = ok(page("clamp", q=QID, mode="reconstruct").run())  # no features: the SAE-spliced-in control
    assert "intervened (c=20)" in prob_table(at)

    at = ok(page("clamp", features="2,3", q=QID).run())
    at.number_input(key="loss_tokens").set_value(300)
    next(b for b in at.button if b.label.startswith("Add loss added")).click()
    ok(at.run())
    assert any("Grey squares: loss added" in c.value for c in at.caption)
    at.number_input(key="gen_n").set_value(5)
    next(b for b in at.button if b.label == "Generate both").click()
    ok(at.run())
    assert len(at.code) >= 2 and "**Base**" in markdown_text(at)


def test_clamp_explorer_without_features_asks_for_them(app_env):
    at = ok(page("clamp", q=QID).run())
    assert any("Choose features to clamp" in i.value for i in at.info)
    at.select_slider(key="sug_thr").set_value(0.5)
    next(b for b in at.button if b.label.startswith("Use the top-N")).click()
    ok(at.run())
    assert len(R.parse_feature_list(at.text_input(key="features").value, "tiny")) == 10
    assert prob_table(at)


def test_clamp_explorer_bad_feature_ids_are_explained(app_env):
    at = page("clamp", features="2, x", q=QID).run()
    assert not at.exception
    assert any("not a feature id" in e.value for e in at.error)
    at = page("clamp", features="999", q=QID).run()
    assert not at.exception and any("out of range" in e.value for e in at.error)


def test_batch_evaluation_runs_a_sweep_and_shows_results(app_env):
    at = ok(page("batch").run())
    at.text_input(key="b_thr").input("0.5")
    at.text_input(key="b_ns").input("1, 2")
    at.text_input(key="b_vals").input("20, 100")
    at.multiselect(key="b_side").set_value(["high_school_geography"])
    at.checkbox(key="b_known").uncheck()
    at.number_input(key="b_qlimit").set_value(3)
    at.number_input(key="b_loss_tokens").set_value(200)
    at.number_input(key="b_sel_tokens").set_value(600)
    ok(at.run())
    assert any("4 configuration(s) + the clean baseline" in c.value for c in at.caption)
    at.button(key="b_run").click()
    ok(at.run())
    job_id = at.selectbox(key="job").value
    end = time.time() + 90
    while not any(m.label == "Unlearning score" for m in at.metric):
        assert time.time() < end, "the sweep did not finish"
        time.sleep(0.5)
        ok(at.run())
    assert at.selectbox(key="job").value == job_id
    metrics = {m.label: m.value for m in at.metric}
    assert re.fullmatch(r"\d\.\d{3}|—", metrics["Unlearning score"])
    assert any(R.SCORE_DEFINITION[:40] in c.value for c in at.caption)
    results = next(d.value for d in at.dataframe if "forget_accuracy" in d.value.columns)
    assert len(results) == 5 and results["config"].iloc[0] == "none"
    assert at.get("plotly_chart")  # Figure 5
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Results (CSV)", "Run (JSON)", "Figure 5 (HTML)"} <= set(labels)


def test_batch_evaluation_progress_and_cancel(app_env):
    from unlearn_core.client import UnlearnClient

    c = UnlearnClient(app_env["url"], token="")
    job = c.submit_job({"thresholds": [0.5], "ns": [1, 2], "values": [20.0, 50.0], "question_limit": 2,
                        "known": False, "side_effect_sets": ["mmlu:high_school_geography"], "selection_tokens": 600,
                        "loss_tokens": 0, "delay_per_config": 1.5})["id"]
    at = ok(page("batch", job=job).run())
    assert at.selectbox(key="job").value == job
    bar = at.get("progress")
    assert bar and re.search(r"(queued|running): \d+ / 5 configurations · ETA", bar[0].proto.text)
    at.button(key="cancel").click()
    ok(at.run())
    assert c.wait_job(job, timeout=30)["status"] == "cancelled"
    ok(at.run())
    assert any("cancelled after" in w.value for w in at.warning)


def test_pages_explain_a_missing_server(monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("UNLEARN_SERVER_URL", url)
    for target in ["app.py", *PAGES.values()]:
        at = AppTest.from_file(str(ROOT / target), default_timeout=TIMEOUT).run()
        assert not at.exception, (target, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert errors and f"No workbench server answers at `{url}`" in errors[0], (target, errors)
        assert "python -m unlearn_core serve" in errors[0] and "UNLEARN_SERVER_URL" in errors[0]
        assert any(b.label == "Retry" for b in at.button)


class _FakeServer:
    """A stand-in server on loopback: /api/health answers ``health``; every other path ``status``/``body``."""

    def __init__(self, health: dict, status: int = 200, body: dict | None = None):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class H(BaseHTTPRequestHandler):
            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path.startswith("/api/health"):
                    self._send(200, outer.health)
                else:
                    self._send(outer.status, outer.body or {})

            def log_message(self, *a):  # quiet
                pass

        self.health, self.status, self.body = health, status, body
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_pages_explain_a_loading_model_and_a_missing_token(monkeypatch):
    fake = _FakeServer({"status": "loading", "detail": "", "auth_required": False, "uptime_s": 4.0})
    try:
        monkeypatch.setenv("UNLEARN_SERVER_URL", fake.url)
        at = AppTest.from_file(str(ROOT / PAGES["clamp"]), default_timeout=TIMEOUT).run()
        assert not at.exception and not at.error
        assert any("is loading its model" in i.value for i in at.info)
        fake.health = {"status": "ok", "detail": "", "auth_required": True, "uptime_s": 9.0}
        fake.status, fake.body = 401, {"detail": "missing or wrong bearer token"}
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
        assert not at.exception
        assert any("UNLEARN_TOKEN" in e.value and "bearer token" in e.value for e in at.error)
    finally:
        fake.close()


# ---------------------------------------------------------------- pure helpers


def test_parse_and_format_feature_lists():
    assert R.parse_feature_list("12, 40 7;12", "emb") == [("emb", 12), ("emb", 40), ("emb", 7)]
    assert R.parse_feature_list("rel:layer_7/width_16k:3, 5", "emb") == [("rel:layer_7/width_16k", 3), ("emb", 5)]
    assert R.parse_feature_list("", "emb") == []
    with pytest.raises(ValueError, match="not a feature id"):
        R.parse_feature_list("1, two", "emb")
    items = [("emb", 1), ("other", 2)]
    assert R.parse_feature_list(R.format_feature_list(items, "emb"), "emb") == items
    assert R.interventions_for(items, 20, "clamp", "emb") == [
        {"sae": "emb", "features": [1], "value": 20.0, "mode": "clamp"},
        {"sae": "other", "features": [2], "value": 20.0, "mode": "clamp"}]
    assert R.interventions_for([], 5, "reconstruct", "emb") == [
        {"sae": "emb", "features": [], "value": 5.0, "mode": "reconstruct"}]


def test_heatmap_html_escapes_and_picks_readable_text_colours():
    html = R.token_heatmap_html(["<b>", " x", "\n", "y"], [0.0, 1.0, 0.5, 0.01])
    assert "&lt;b&gt;" in html and "<b>" not in html
    spans = re.findall(r'<span class="uw-tok"[^>]*>', html)
    assert len(spans) == 4
    assert "background" not in spans[0]  # zero: theme colours, nothing hard-coded
    assert "color:#ffffff" in spans[1]  # the darkest shade gets white text
    assert "color:#000000" in spans[3]  # a pale shade gets black text
    assert 'title="#1 &#x27; x&#x27;: 1.000"' in spans[1]
    assert "↵<br>" in html
    assert R.text_colour((255, 255, 255)) == "#000000" and R.text_colour((0, 0, 0)) == "#ffffff"


def test_probability_cells_and_table():
    assert R.prob_cells([0.3123, 0.2, 0.1, 0.0]) == ["A 0.3123", "B 0.2000", "C 0.1000", "D 0.0000"]
    t = R.prob_table_markdown([("base", {"probs": [0.5, 0.2, 0.2, 0.1], "predicted": 0, "mass": 1.0})], answer=0)
    assert "| A ✓ |" in t and "**A 0.5000**" in t and "A (correct)" in t


def test_unlearning_score():
    def row(cfg, forget, side):
        return {"config": cfg, "forget_accuracy": forget, "side_effect_mean": side}

    res = [row("none", 1.0, 0.80), row("a", 0.30, 0.795), row("b", 0.10, 0.70), row("c", 0.50, 0.81)]
    sc = R.unlearning_score(res)
    assert sc["best_config"] == "a" and sc["score"] == pytest.approx(0.70) and sc["n_eligible"] == 2
    sc = R.unlearning_score([row("none", 1.0, 0.8), row("b", 0.1, 0.5)])
    assert sc["score"] is None and "no configuration" in sc["reason"]
    assert R.unlearning_score([])["reason"] == "no clean baseline in the results yet"


def test_numbers_sources_and_eta():
    assert R.parse_numbers("0.01, 0.001 0.01") == [0.01, 0.001]
    assert R.parse_numbers("10,20", int) == [10, 20]
    with pytest.raises(ValueError):
        R.parse_numbers("1, nan")
    assert R.source_kind("fallback: OFFLINE FALLBACK: MMLU biology") == "OFFLINE FALLBACK"
    assert R.source_kind("/data/x.json") == "real data (local file)"
    assert R.source_kind("unavailable") == "unavailable"
    assert R.fmt_eta(None) == "estimating…" and R.fmt_eta(75) == "1 min 15 s" and R.fmt_eta(3700) == "1 h 01 min"
