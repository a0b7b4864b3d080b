"""The Streamlit app with `streamlit.testing.v1.AppTest`, against a real tiny-backend server
process (started once per session), plus the pure view helpers.

Each page is run the way `streamlit run app.py` runs it (through app.py's navigation, with
``switch_page``) and also on its own (``AppTest.from_file("pages/...")``).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from browser_helpers import ROOT, closed_port_url, shared_tiny_server
from streamlit.testing.v1 import AppTest

from unlearn_core.evaluation import targets as T
from unlearn_core.ui import render as R
from unlearn_core.ui import results as RS

PAGES = {
    "search": "pages/1_Feature_search.py",
    "tokens": "pages/2_Token_highlighting.py",
    "clamp": "pages/3_Clamp_explorer.py",
    "batch": "pages/4_Batch_evaluation.py",
    "robust": "pages/5_Robustness.py",
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


def test_home_guided_demo_on_the_chosen_target(app_env):
    from unlearn_core.server.client import UnlearnClient

    UnlearnClient(app_env["url"], token="").demo_task("bio-basics", max_scan=1)  # feature statistics, cached
    at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())
    assert at.selectbox(key="target").value == "bio-basics"  # the default target
    at.selectbox(key="target").set_value("sherlock")
    ok(at.run())
    assert any(m.value.startswith("**Target: sherlock.**") for m in at.markdown)
    n = T.get_target("sherlock").selection.n  # sherlock's default is a search selection (targets.toml)
    assert any(
        f'For **sherlock** the default features are the top {n} features most specific to "Sherlock Holmes" '
        "against `webtext-train`"
        in c.value
        and "the frequency tables rank `sherlock@train`" in c.value
        for c in at.caption
    )
    at.selectbox(key="target").set_value("bio-basics")
    ok(at.run())
    at.button(key="run_demo").click()
    ok(at.run())
    # the tiny model knows nothing: the page says so, plainly, instead of showing a flip
    assert any("flipped none of the first" in i.value for i in at.info)
    assert any("tiny test backend is a random model" in c.value for c in at.caption)
    assert any("forget and" in c.value and "retain question(s) checked" in c.value for c in at.caption)
    n = T.get_target("bio-basics").selection.n
    assert any(m.value.startswith("**The intervention:**") and f"on {n} feature(s)" in m.value for m in at.markdown)
    ok(at.run())  # the result stays on screen across reruns
    assert any("flipped none of the first" in i.value for i in at.info)


def test_home_demo_runs_as_a_task_once(app_env, monkeypatch):
    """The default demo scans past the synchronous limit: the page submits the task and polls it."""

    from unlearn_core.ui import connection as CN

    real, seen = CN.call, []

    def call(method, *a, **k):
        seen.append(method)
        return real(method, *a, **k)

    monkeypatch.setattr(CN, "call", call)
    CN.clear_cache()  # an earlier test's demo answer too
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["target"] = "bio-basics"
    ok(at.run())
    at.button(key="run_demo").click()
    ok(at.run())
    assert "submit_task" in seen and "task" in seen and "demo" not in seen
    assert any("flipped none of the first 60" in i.value for i in at.info)  # the default scan: a task
    n = seen.count("submit_task")
    ok(at.run())  # a rerun shows the result again without running the task again
    assert seen.count("submit_task") == n and any("flipped none of the first 60" in i.value for i in at.info)
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)  # another session
    other.query_params["target"] = "bio-basics"
    ok(other.run())
    other.button(key="run_demo").click()
    ok(other.run())
    assert seen.count("submit_task") == n and any("flipped none of the first 60" in i.value for i in other.info)


def test_a_cached_read_past_the_synchronous_limit_is_made_again_as_its_task(app_env):
    """``connection.cached``: a 409 naming a task route becomes the client's ``<method>_task``."""
    import streamlit as st

    from unlearn_core.server.client import ServerError, UnlearnClient
    from unlearn_core.ui import connection as CN

    st.cache_data.clear()
    body = dict(feature=3, corpora=["wikitext@heldout"], n_tokens=4_321, k=2, neuronpedia=False)  # not cached
    c = UnlearnClient(app_env["url"], token="")
    with pytest.raises(ServerError) as e:
        c.dashboard(**body)
    assert e.value.status == 409 and "POST /api/tasks/features_dashboard" in e.value.message
    got = CN.cached("dashboard", **body)
    assert got == c.dashboard(**body)  # the task's answer; the statistics are cached now


KEPT = (
    [0.1, 0.75, 0.1, 0.05],
    "#### Kept: a general-knowledge",
    "Kept: still right and about as sure (P(correct) 0.80 → 0.75, within 0.10).",
)
LESS_SURE = (
    [0.1, 0.6, 0.25, 0.05],
    "#### Weakened: a general-knowledge question that stays right, but less sure",
    "Still right, but less sure: P(correct) 0.80 → 0.60, a drop of more than 0.10.",
)


@pytest.mark.parametrize("retain_after, heading, verdict", [KEPT, LESS_SURE], ids=["kept", "less-sure"])
def test_home_demo_states_the_flip_plainly(app_env, monkeypatch, retain_after, heading, verdict):
    """How a found example is rendered (the tiny model never finds one): a canned demo task answer.
    A retain answer still right but 0.20 less sure is not called kept (defect 1 of issue 35)."""

    from unlearn_core.ui import connection as CN

    def score(probs: list[float], answer: int) -> dict:
        pred = max(range(4), key=lambda i: probs[i])
        return {
            "probs": probs,
            "mass": 1.0,
            "predicted": pred,
            "correct": pred == answer,
            "scoring": "cloze",
            "loglik": None,
        }

    def question(qid: str, text: str, choices: list[str], subject: str, extra: dict) -> dict:
        source = qid.split(":")[0]  # the second choice is right in both
        return dict(id=qid, question=text, choices=choices, answer=1, subject=subject, source=source, extra=extra)

    sherlock = ["Mycroft Holmes", "Dr. John Watson", "Inspector Lestrade", "Dr. James Mortimer"]
    fq = question(
        "quiz-sherlock:sh-001",
        "Who is Sherlock Holmes's friend and chronicler?",
        sherlock,
        "general",
        {"kind": "canon"},
    )
    poirot = ["Dorothy L. Sayers", "Agatha Christie", "Ngaio Marsh", "P. D. James"]
    rq = question("quiz-retain:rt-002", "Who created the detective Hercule Poirot?", poirot, "detective fiction", {})
    fake = {
        "target": "sherlock",
        "description": "d",
        "forget_corpus": "sherlock@train",
        "forget_corpus_note": "",
        "retain_corpora": ["wikitext@train"],
        "intervention": {"sae": "tiny", "mode": "clamp", "c": 100.0, "features": [3, 5]},
        "forget_example": {
            "question": fq,
            "base": score([0.1, 0.7, 0.1, 0.1], 1),
            "intervened": score([0.5, 0.2, 0.2, 0.1], 1),
        },
        "retain_example": {
            "question": rq,
            "base": score([0.1, 0.8, 0.05, 0.05], 1),
            "intervened": score(retain_after, 1),
        },
        "n_checked_forget": 4,
        "n_checked_retain": 1,
        "generation": {
            "question_id": "quiz-sherlock:sh-001",
            "prompt": "Question: Who is Sherlock Holmes's friend and chronicler?\nAnswer:",
            "keyword": "watson",
            "clean": " Dr. John Watson",
            "clamped": " The 1920s",
            "clean_says_it": True,
            "clamped_says_it": False,
            "clamped_nll": 2.1,
            "degenerate": "off-topic",
            "verdict": "broken output (off-topic), not evidence of forgetting",
        },
        "summary": "The clamp made the model forget a fact it knew (its answer flipped) while a general-knowledge "
        "question stayed right.",
    }
    real = CN.call

    def call(method, *a, **k):  # the demo runs as a task: submitted, then polled
        if method == "submit_task" and a[0] == "demo":
            return {"id": "demo-task", "status": "queued"}
        if method == "task" and a[0] == "demo-task":
            return {"id": "demo-task", "status": "done", "done": 1, "total": 1, "eta_s": None, "result": fake}
        return real(method, *a, **k)

    monkeypatch.setattr(CN, "call", call)
    CN.clear_cache()  # the app's cached answers, demo results included
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["target"] = "sherlock"
    ok(at.run())
    at.button(key="run_demo").click()
    ok(at.run())
    assert any(x.value.startswith("The clamp made the model forget") for x in at.success)
    text = markdown_text(at)
    assert "#### Forgotten: a question the model knew" in text and heading in text
    assert (
        "Clean, the model answers **B. Dr. John Watson** (right). With the 2 feature(s) clamped at c = 100 it "
        "answers **A. Mycroft Holmes** (wrong)."
    ) in text
    assert "The answer flipped: the clamp made the model forget it (P(correct) 0.70 → 0.20)." in text
    assert "it still answers **B. Agatha Christie** (right)" in text
    assert verdict in text
    assert ("Kept" in text) == (heading == KEPT[1])
    tables = [m.value for m in at.markdown if m.value.startswith("| | A")]
    assert len(tables) == 2 and "| clean |" in tables[0] and "clamped (c=100)" in tables[0]
    links = [p.proto.label for p in at.get("page_link")]
    assert links.count("Open this question in the Clamp explorer") == 2
    assert len(at.get("plotly_chart")) == 2  # each question as bars, clean vs clamped (issue 35: pictures on Home)
    # the question asked openly: broken clamped text is flagged as such, never shown as forgetting
    assert any("**off-topic**" in w.value and "not evidence of forgetting" in w.value for w in at.warning)
    at.button(key="prep_report").click()  # the demo report: one self-contained HTML file
    ok(at.run())
    assert [b.proto.label for b in at.get("download_button")] == ["Download the demo report"]
    page_html = at.session_state["_demo_report:sherlock"]
    assert "Who is Sherlock Holmes&#x27;s friend and chronicler?" in page_html and verdict.split(":")[0] in page_html
    assert "<script" not in page_html and "src=" not in page_html and "<link" not in page_html


CORPUS_TXT = (
    "Paragraph one about quokkas: small marsupials of Rottnest Island that look like they smile. " * 3
    + "\n\n"
    + "Paragraph two about quokkas: they eat leaves and grasses, mostly at night. " * 3
    + "\n"
)
QUESTIONS_CSV = (
    "question,A,B,C,D,answer\n"
    "Where do many quokkas live?,Rottnest Island,Tasmania,Fiji,Crete,A\n"
    "What do quokkas eat?,Fish,Leaves and grasses,Insects,Seeds only,B\n"
    "When are quokkas mostly active?,At noon,At dawn only,At night,Never,C\n"
)


def home_with_the_form() -> AppTest:
    at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())
    assert any(e.label == "Define your own target" for e in at.expander)
    return at


def test_home_defines_a_target_selects_it_and_deletes_it(app_env):
    from unlearn_core.server.client import ServerError, UnlearnClient

    client = UnlearnClient(app_env["url"], token="")
    try:
        at = home_with_the_form()
        at.text_input(key="nt_name_0").set_value("quokka")
        at.text_input(key="nt_desc_0").set_value("Quokka facts")
        at.file_uploader(key="nt_corpus_0").set_value(("quokka.txt", CORPUS_TXT.encode(), "text/plain"))
        at.file_uploader(key="nt_questions_0").set_value(("quokka.csv", QUESTIONS_CSV.encode(), "text/csv"))
        at.number_input(key="nt_n_0").set_value(5)
        at.number_input(key="nt_c_0").set_value(300)
        ok(at.run())
        assert "2 document(s), 499 characters." in [c.value for c in at.caption]  # two paragraphs of >= 200
        assert any(c.value.startswith("3 question(s), e.g. “Where do many quokkas live?”") for c in at.caption)
        at.button(key="nt_save").click()
        ok(at.run())
        assert any(
            x.value.startswith("Target **quokka** saved (2 document(s), 3 question(s)) and selected")
            for x in at.success
        )
        assert at.selectbox(key="target").value == "quokka"  # selected in the sidebar
        assert any(m.value == "**Target: quokka.** Quokka facts" for m in at.markdown)  # the demo is on it
        assert at.text_input(key="nt_name_1").value == ""  # the form is empty again
        t = next(x for x in client.targets()["targets"] if x["name"] == "quokka")
        assert t["selection"]["n"] == 5 and t["intervention"]["c"] == 300.0 and t["defined_in_app"] is True
        qs = client.questions(t["forget_questions"])["questions"]
        assert [q["answer"] for q in qs] == [0, 1, 2] and qs[1]["choices"][1] == "Leaves and grasses"

        at.button(key="run_demo").click()  # the guided demo runs on the new target
        ok(at.run())
        assert any("flipped none of the first" in i.value for i in at.info)
        # the same name again: the form says so before anything is sent
        at.text_input(key="nt_name_1").set_value("quokka")
        at.run()
        assert any("exists already" in e.value for e in at.error)

        at.button(key="nt_delete").click()
        ok(at.run())
        assert any(x.value == "Target **quokka** deleted." for x in at.success)
        assert at.selectbox(key="target").value == "bio-basics"
        assert "quokka" not in {x["name"] for x in client.targets()["targets"]}
    finally:
        try:
            client.delete_target("quokka")
        except ServerError:
            pass


def test_home_target_form_shows_file_errors_with_the_row(app_env):
    at = home_with_the_form()
    bad = QUESTIONS_CSV + "Is this row complete?,yes,no,maybe,\n"
    at.file_uploader(key="nt_questions_0").set_value(("mine.csv", bad.encode(), "text/csv"))
    at.file_uploader(key="nt_corpus_0").set_value(("mine.jsonl", b'{"text": "fine"}\nnot json\n', "text/plain"))
    at.run()
    errors = [e.value for e in at.error]
    assert "The questions: mine.csv, row 5: every choice must be a non-empty string" in errors
    assert any(e.startswith("The corpus: mine.jsonl, line 2: not valid JSON") for e in errors)
    at.text_input(key="nt_name_0").set_value("Bad Name")
    at.run()
    assert any("A target name is 1-40 lower-case letters" in e.value for e in at.error)
    at.button(key="nt_save").click()
    at.run()
    assert any(e.value.startswith("To save, give a corpus file, a question file") for e in at.error)
    assert at.selectbox(key="target").value == "bio-basics"
    assert not any(x.value.startswith("Target **") for x in at.success)


def test_target_form_parses_corpora_and_question_files():
    from unlearn_core.data.question_files import QuestionFileError
    from unlearn_core.ui import target_form as TF

    docs = TF.corpus_documents("a.txt", ("x" * 150 + "\n\n" + "y" * 150 + "\n\n" + "z" * 250).encode())
    assert docs == ["x" * 150 + "\n\n" + "y" * 150, "z" * 250]  # paragraphs grouped to >= 200 characters
    assert TF.corpus_documents("b.jsonl", b'{"text": "one"}\n\n{"text": "two", "id": 3}\n') == ["one", "two"]
    assert TF.corpus_documents("c.txt", "\ufeffWindows text\r\nline two".encode()) == ["Windows text\nline two"]
    with pytest.raises(ValueError, match=r'b.jsonl, line 1: expected an object with a "text" string'):
        TF.corpus_documents("b.jsonl", b'["not", "an object"]\n')
    with pytest.raises(ValueError, match="not UTF-8"):
        TF.corpus_documents("d.txt", b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="no text"):
        TF.corpus_documents("e.txt", b"  \n\n ")
    with pytest.raises(ValueError, match=".txt or .jsonl"):
        TF.corpus_documents("f.pdf", b"%PDF")

    rows = TF.question_rows("q.csv", QUESTIONS_CSV.encode())
    assert rows[1] == {
        "question": "What do quokkas eat?",
        "choices": ["Fish", "Leaves and grasses", "Insects", "Seeds only"],
        "answer": 1,
    }
    mmlu = "question,choice0,choice1,choice2,choice3,answer,topic\nQ?,a,b,c,d,3,t\n"
    assert TF.question_rows("m.csv", mmlu.encode()) == [
        {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 3, "topic": "t"}
    ]
    wmdp = [{"question": "J?", "choices": ["a", "b", "c", "d"], "answer": "C", "id": "j1", "kind": "x"}]
    import json

    assert TF.question_rows("w.json", json.dumps(wmdp).encode()) == [
        {"question": "J?", "choices": ["a", "b", "c", "d"], "answer": 2, "id": "j1", "kind": "x"}
    ]
    with pytest.raises(QuestionFileError, match=r"^w.json, question 1: answer 7 out of range"):
        TF.question_rows("w.json", json.dumps([{**wmdp[0], "answer": 7}]).encode())
    with pytest.raises(QuestionFileError, match=r"^x.csv: the header must have 'question' and 'answer'"):
        TF.question_rows("x.csv", b"q,a,b,c,d\n")
    with pytest.raises(QuestionFileError, match=".json .WMDP schema. or .csv"):
        TF.question_rows("x.xlsx", b"")
    assert TF.check_name("my-topic_2", {"bio-basics"}) is None
    assert "exists already" in TF.check_name("bio-basics", {"bio-basics"})
    assert "lower-case" in TF.check_name("-bad", set()) and "lower-case" in TF.check_name("a" * 41, set())


def test_every_page_runs_through_the_app_navigation(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update({"features": "2,3", "qset": "wmdp-bio", "q": QID, "f": "2", "ntok": "600"})
    ok(at.run())
    titles = {}
    for name, path in PAGES.items():
        at.switch_page(path)
        ok(at.run())
        titles[name] = [t.value for t in at.title]
    assert titles == {
        "search": ["Feature search"],
        "tokens": ["Token highlighting"],
        "clamp": ["Clamp explorer"],
        "batch": ["Batch evaluation"],
        "robust": ["Robustness"],
    }


def test_view_state_follows_the_user_across_pages(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    ok(at.run())
    at.switch_page(PAGES["clamp"])
    at.query_params.update({"features": "2,3", "c": "40", "mode": "add", "qset": "wmdp-bio", "q": QID})
    ok(at.run())
    assert (at.text_input(key="features").value, at.slider(key="c").value, at.selectbox(key="mode").value) == (
        "2,3",
        40,
        "add",
    )
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
    assert "#### WebText" in text and "#### bio-basics forget text (`quiz:bio@train`)" in text  # the target's
    assert at.selectbox(key="dash2").value == "quiz:bio@train"
    at.selectbox(key="dash2").set_value("wmdp-bio-text")  # WMDP-bio text, one click away
    ok(at.run())
    assert "#### WMDP-bio (`wmdp-bio-text`)" in markdown_text(at)
    heat = [m.value for m in at.markdown if 'class="uw-heat"' in m.value]
    assert heat and re.search(r'title="#\d+ .*: \d+\.\d{3}"', heat[0])  # values on hover
    assert at.get("plotly_chart")  # the histogram
    at.button(key="set_text_add").click()
    ok(at.run())
    sets = at.session_state["feature_sets"]
    assert len(sets["my set"]) == 15 and sets["my set"][0] == {"sae": "tiny", "feature": first}


def test_feature_search_short_query_in_context_and_empty_text(app_env):
    at = page("search", ntok="600")
    ok(at.run())
    at.text_area(key="search_text").set_value("spores")
    ok(at.run())
    assert "Read in context" in " ".join(c.value for c in at.caption)
    in_context = list(at.dataframe[0].value["feature"])
    at.checkbox(key="word_alone").check()
    ok(at.run())
    assert "Read in context" not in " ".join(c.value for c in at.caption)
    assert list(at.dataframe[0].value["feature"]) != in_context  # the word alone is read otherwise
    at.text_area(key="search_text").set_value("  ")
    ok(at.run())
    assert not at.dataframe and "Type a text" in " ".join(i.value for i in at.info)


def test_feature_search_forget_retain_table(app_env):
    at = page("search", by="forget/retain", sel="paper", thr="0.5")
    ok(at.run())
    at.number_input(key="sel_tokens").set_value(600)
    at.button(key="run_sel").click()
    ok(at.run())
    df = at.dataframe[0].value
    assert {"feature", "forget_freq", "retain_freq"} <= set(df.columns) and len(df) > 0
    assert (df["retain_freq"] < 0.5).all()
    assert list(df["forget_freq"]) == sorted(df["forget_freq"], reverse=True)


def test_feature_search_target_selection_shows_the_retain_corpora(app_env):
    at = ok(page("search", by="forget/retain").run())
    assert at.segmented_control(key="sel").value == "target"  # the target's selection by default
    at.button(key="run_tsel").click()
    ok(at.run())
    t = T.get_target("bio-basics")
    per = [f"retain: {c}" for c in t.retain_corpora]
    df = at.dataframe[0].value
    assert {"feature", "forget_freq", "retain_freq", *per} <= set(df.columns) and len(df) == t.selection.n
    assert (df["retain_freq"] - df[per].max(axis=1)).abs().max() < 1e-9  # the max over the retain corpora
    used = [c.value for c in at.caption if "against the retain corpora" in c.value]
    assert used and all(f"`{c}`" in used[0] for c in t.retain_corpora) and "`quiz:bio@train`" in used[0]
    assert any("test backend" in i.value for i in at.info)  # the relaxed threshold is said


def test_feature_search_target_selection_by_a_question_method(app_env):
    """The method picker sends the method: the threshold box is off for it, and on the tiny model
    (which knows no question) the server's reason comes back as an error, not a table."""
    at = ok(page("search", by="forget/retain").run())
    assert at.selectbox(key="tsel_method").value is None and not at.selectbox(key="tsel_thr").disabled
    at.selectbox(key="tsel_method").set_value("attribution")
    ok(at.run())
    assert at.selectbox(key="tsel_thr").disabled
    at.button(key="run_tsel").click()
    at.run()
    assert any("knows none" in e.value for e in at.error) and not at.dataframe


def test_feature_search_by_explanation_says_which_source_answered(app_env):
    """Issue 35, defect 5: the descriptions searched are the sidebar target's own selection (it was
    always the top 50 WMDP-bio-text features, so "Holmes" matched nothing under sherlock)."""
    at = page("search", by="explanation", target="sherlock")
    ok(at.run())
    at.text_input(key="xq").input("fires")
    ok(at.run())
    assert "target sherlock's selection" in next(c.value for c in at.caption if "Answered by" in c.value)
    assert any("no Neuronpedia id" in i.value for i in at.info)
    answered = [c.value for c in at.caption if "Answered by" in c.value]
    assert answered and "local automatic descriptions" in answered[0] and "not Neuronpedia" in answered[0]
    assert len(at.dataframe) == 1 and "explanation" in at.dataframe[0].value.columns
    stated = re.search(r"(\d+) of \d+ features match", answered[0])
    assert stated and int(stated.group(1)) == len(at.dataframe[0].value)  # the count it states is the table's


def test_token_highlighting_heatmap_token_features_and_answer(app_env):
    at = ok(page("tokens", features="2,3", qset="wmdp-bio", q=QID).run())
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
    at = ok(page("clamp", features="2,3,4", qset="wmdp-bio", q=QID).run())
    assert at.slider(key="c").value == 20
    assert at.selectbox(key="mode").value == "clamp"
    before = prob_table(at)
    assert re.search(r"\| base \| (\*\*)?A 0\.\d{4}", before) and "intervened (c=20)" in before
    charts = at.get("plotly_chart")
    assert len(charts) == 1  # the probability-vs-c curve (the bars are HTML, cheap to redraw on each step)
    assert any('class="uw-bars"' in m.value for m in at.markdown)
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
    from unlearn_core.ui import connection as CN

    at = ok(page("clamp", features="3,5", qset="wmdp-bio", q=QID).run())
    calls = []
    real = CN.call
    monkeypatch.setattr(
        CN, "call", lambda method, *a, **k: calls.append((method, len(k.get("values") or []))) or real(method, *a, **k)
    )
    at.slider(key="c").set_value(73)
    ok(at.run())
    assert "intervened (c=73)" in prob_table(at)
    assert ("mcq", 1) in calls  # the bars at the new value
    assert [c for c in calls if c[0] == "mcq" and c[1] > 1] == []  # the curve came from the cache
    assert len(at.get("plotly_chart")) == 1


def test_clamp_explorer_modes_loss_added_and_generation(app_env):
    at = ok(page("clamp", features="2,3,4", qset="wmdp-bio", q=QID, mode="zero").run())
    assert at.slider(key="c").disabled
    assert "intervened (c=0)" in prob_table(at)
    assert any("Zero ablation has no c" in i.value for i in at.info)

    # no features: the SAE-spliced-in control
    at = ok(page("clamp", qset="wmdp-bio", q=QID, mode="reconstruct").run())
    assert "intervened (c=20)" in prob_table(at)

    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID).run())
    at.number_input(key="loss_tokens").set_value(300)
    next(b for b in at.button if b.label.startswith("Add loss added")).click()
    ok(at.run())
    assert any("Grey squares: loss added" in c.value for c in at.caption)
    at.number_input(key="gen_n").set_value(5)
    next(b for b in at.button if b.label == "Generate both").click()
    ok(at.run())
    assert len(at.code) >= 2 and "**Base**" in markdown_text(at)


def test_clamp_explorer_without_features_asks_for_them(app_env):
    at = ok(page("clamp", qset="wmdp-bio", q=QID).run())
    assert any("Choose features to clamp" in i.value for i in at.info)
    at.select_slider(key="sug_thr").set_value(0.5)
    next(b for b in at.button if b.label.startswith("Use the top-N")).click()
    ok(at.run())
    assert len(R.parse_feature_list(at.text_input(key="features").value, "tiny")) == 10
    assert prob_table(at)


def test_question_picker_defaults_to_and_follows_the_target(app_env):
    at = ok(page("tokens").run())
    assert at.selectbox(key="qset").value == "quiz:bio"  # the target's forget questions
    assert at.selectbox(key="qset").options[:3] == [
        "quiz:bio (bio-basics forget set)",
        "quiz:retain!overlaps_bio (bio-basics retain set)",
        "quiz:retain (bio-basics retain set)",
    ]
    assert at.selectbox(key="q").value.startswith("quiz-bio:")
    at.selectbox(key="target").set_value("sherlock")
    ok(at.run())
    assert at.selectbox(key="qset").value == "quiz:sherlock"
    assert at.selectbox(key="q").value.startswith("quiz-sherlock:")


def test_clamp_explorer_uses_the_targets_default_intervention(app_env):
    at = ok(page("clamp").run())
    assert at.selectbox(key="qset").value == "quiz:bio"
    at.button(key="use_target").click()
    ok(at.run())
    t = T.get_target("bio-basics")
    assert len(R.parse_feature_list(at.text_input(key="features").value, "tiny")) == t.selection.n
    assert at.selectbox(key="mode").value == t.intervention.mode
    assert at.slider(key="c").value == int(t.intervention.c)  # the slider reaches the default (800)
    assert f"intervened (c={int(t.intervention.c)})" in prob_table(at)


def test_clamp_explorer_takes_c_up_to_500_from_the_url(app_env):
    """The targets' default c is a few hundred (bio-basics: 800): a link with c=800 (as the demo and
    the target selection write) is honoured, not cut to the slider's end; the curve spans the
    slider's range."""
    from unlearn_core.evaluation.targets import load_targets
    from unlearn_core.ui import target_picker as TP

    assert max(t.intervention.c for t in load_targets().values()) <= TP.MAX_C == 1000
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="800").run())
    assert at.slider(key="c").value == 800 and at.slider(key="c").max == TP.MAX_C
    assert "intervened (c=800)" in prob_table(at)
    assert at.query_params["c"] == "800"
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="1000").run())
    assert at.slider(key="c").value == 1000
    at = ok(page("clamp", features="2,3", qset="wmdp-bio", q=QID, c="1001").run())
    assert at.slider(key="c").value == 20  # out of range: ignored, the default
    assert TP.clamp_c(400.0) == 400 and TP.clamp_c(1900) == 1000 and TP.clamp_c(-3) == 0


def test_clamp_explorer_bad_feature_ids_are_explained(app_env):
    at = page("clamp", features="2, x", qset="wmdp-bio", q=QID).run()
    assert not at.exception
    assert any("not a feature id" in e.value for e in at.error)
    at = page("clamp", features="999", qset="wmdp-bio", q=QID).run()
    assert not at.exception and any("out of range" in e.value for e in at.error)


def wait_for_score(at: AppTest) -> None:
    """Rerun the batch page until the run's unlearning score shows (the sweep finished)."""
    end = time.time() + 90
    while not any(m.label == "Unlearning score" for m in at.metric):
        assert time.time() < end, "the sweep did not finish"
        time.sleep(0.5)
        ok(at.run())


def run_small_paper_sweep(at: AppTest) -> str:
    """Shared by the batch tests: 3 questions on one side-effect subject, no known filter, small
    token budgets; checks the 4 configurations are announced, runs the job and waits for its
    score. Returns the job id the page selected when the run started."""
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
    wait_for_score(at)
    return job_id


def paper_sweep_form(ns: str = "1, 2", at: AppTest | None = None) -> AppTest:
    """The batch page (``at``, else a fresh one) in the paper's WMDP-bio setup with a small grid:
    threshold 0.5, N in ``ns``, c 20 and 100."""
    if at is None:
        at = ok(page("batch").run())
    at.segmented_control(key="b_setup").set_value("paper")
    ok(at.run())
    at.text_input(key="b_thr").input("0.5")
    at.text_input(key="b_ns").input(ns)
    at.text_input(key="b_vals").input("20, 100")
    return at


def test_batch_evaluation_runs_a_sweep_and_shows_results(app_env):
    at = ok(page("batch").run())
    assert at.segmented_control(key="b_setup").value == "target"
    job_id = run_small_paper_sweep(paper_sweep_form(at=at))
    assert at.selectbox(key="job").value == job_id  # still the run started, after it finished
    metrics = {m.label: m.value for m in at.metric}
    assert re.fullmatch(r"\d\.\d{3}|—", metrics["Unlearning score"])
    assert any(RS.SCORE_DEFINITION[:40] in c.value for c in at.caption)
    results = next(d.value for d in at.dataframe if "forget_accuracy" in d.value.columns)
    assert len(results) == 5 and results["config"].iloc[0] == "none"
    assert at.get("plotly_chart")  # Figure 5
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Results (CSV)", "Run (JSON)", "Figure 5 (HTML)"} <= set(labels)


def test_batch_evaluation_prefilled_from_the_target(app_env):
    at = ok(page("batch").run())
    t, k = T.get_target("bio-basics"), "bio-basics"
    assert at.selectbox(key=f"b_tforget_{k}").value == "quiz:bio@heldout"
    assert at.multiselect(key=f"b_tretain_{k}").value == [T.with_part(s, "heldout") for s in t.retain_questions]
    assert at.multiselect(key=f"b_trcorpora_{k}").value == list(t.retain_corpora)
    assert at.selectbox(key=f"b_tfcorpus_{k}").value == t.forget_corpus
    assert at.checkbox(key=f"b_tstrict_{k}").value is t.strict_known
    at.text_input(key="b_thr").input("1.0")
    at.text_input(key="b_ns").input("2")
    at.text_input(key="b_vals").input("50")
    at.checkbox(key=f"b_tknown_{k}").uncheck()
    at.number_input(key="b_qlimit").set_value(2)
    at.number_input(key="b_loss_tokens").set_value(0)
    at.number_input(key=f"b_tsel_tokens_{k}").set_value(600)
    ok(at.run())
    n_sets = len(t.retain_questions)
    assert any(
        f"1 configuration(s) + the clean baseline; {n_sets} retain question set(s)" in c.value for c in at.caption
    )
    at.button(key="b_run").click()
    ok(at.run())
    wait_for_score(at)
    assert "Forget against retain (target bio-basics)" in [x.value for x in at.subheader]
    summary = next(m.value for m in at.markdown if m.value.startswith("Accuracy "))
    assert (
        "forget set `quiz:bio@heldout` (2 questions); retain set(s) `quiz:retain@heldout!overlaps_bio` (2)" in summary
    )
    assert "| clean model |" in summary and "| forget accuracy | retain accuracy (mean) |" in summary
    assert {"Clean forget accuracy", "Clean retain accuracy"} <= {m.label for m in at.metric}


def test_batch_evaluation_progress_and_cancel(app_env):
    from unlearn_core.server.client import UnlearnClient

    c = UnlearnClient(app_env["url"], token="")
    job = c.submit_job(
        {
            "thresholds": [0.5],
            "ns": [1, 2],
            "values": [20.0, 50.0],
            "question_limit": 2,
            "known": False,
            "side_effect_sets": ["mmlu:high_school_geography"],
            "selection_tokens": 600,
            "loss_tokens": 0,
            "delay_per_config": 1.5,
        }
    )["id"]
    at = ok(page("batch", job=job).run())
    assert at.selectbox(key="job").value == job
    bar = at.get("progress")
    pattern = (
        r"(queued|running): \d+ / 4 configurations \(the clean baseline (done|first)\)( · now: [^·]+)? · "
        r"(ETA|running|queued|step \d+ / \d+ of (this stage|these configurations), ETA)"
    )
    assert bar and re.search(pattern, bar[0].proto.text), bar[0].proto.text
    at.button(key="cancel").click()
    ok(at.run())
    assert c.wait_job(job, timeout=900)["status"] == "cancelled"
    # issue 35, defect 7: the browser kept a stale "running" in the picker's label after the run ended;
    # the label holds what never changes, the status is a caption read on every run
    ok(at.run())
    assert not any(w in at.selectbox(key="job").options[0] for w in ("running", "cancelled", "queued"))
    assert any(c.value.startswith("This run: **cancelled**") for c in at.caption)
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
        {"sae": "other", "features": [2], "value": 20.0, "mode": "clamp"},
    ]
    assert R.interventions_for([], 5, "reconstruct", "emb") == [
        {"sae": "emb", "features": [], "value": 5.0, "mode": "reconstruct"}
    ]


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
    sc = RS.unlearning_score(res)
    assert sc["best_config"] == "a" and sc["score"] == pytest.approx(0.70) and sc["n_eligible"] == 2
    sc = RS.unlearning_score([row("none", 1.0, 0.8), row("b", 0.1, 0.5)])
    assert sc["score"] is None and "no configuration" in sc["reason"]
    # issue 35, defect 10: the reason names the bar, the closest row and how few questions it rests on
    few = [row("none", 1.0, 1.0), {**row("t=1|n=50|c=400", 0.0, 0.667), "side_n": 3}]
    sc = RS.unlearning_score(few, word="retain")
    assert sc["reason"] == (
        "no configuration keeps retain accuracy ≥ 0.99 × the clean model's (0.990): the closest, "
        "t=1|n=50|c=400, keeps 0.667 on 3 retain questions (one answer is 33% of them)"
    )
    assert RS.unlearning_score([])["reason"] == "no clean baseline in the results yet"


def test_numbers_sources_and_eta():
    assert R.parse_numbers("0.01, 0.001 0.01") == [0.01, 0.001]
    assert R.parse_numbers("10,20", int) == [10, 20]
    with pytest.raises(ValueError):
        R.parse_numbers("1, nan")
    assert R.source_kind("fallback: OFFLINE FALLBACK: MMLU biology") == "OFFLINE FALLBACK"
    assert R.source_kind("/data/x.json") == "real data (local file)"
    assert R.source_kind("unavailable") == "unavailable"
    assert R.fmt_eta(None) == "estimating…" and R.fmt_eta(75) == "1 min 15 s" and R.fmt_eta(3700) == "1 h 01 min"


def test_question_filter_that_matches_nothing_says_so(app_env):
    at = ok(page("clamp", qset="quiz:retain").run())
    at.text_input(key="qfilter").set_value("Poirot")
    ok(at.run())
    assert not at.warning
    m = re.match(r"Question \((\d+) of 133", at.selectbox(key="q").label)
    assert m and 0 < int(m.group(1)) < 133
    at.text_input(key="qfilter").set_value("zzqqxx-no-such-word")
    ok(at.run())
    assert any("No question in this set contains" in w.value for w in at.warning)
    assert at.selectbox(key="q").label.startswith("Question (133 of 133")


def test_question_box_label_says_how_many_the_known_filter_checked():
    data = {"total": 190, "offset": 0, "limit": 30, "known": True, "label": "bio quiz (dev)"}
    assert R.question_box_label(14, data) == "Question (14 known among the first 30 checked, of 190 in bio quiz (dev))"
    assert R.question_box_label(3, {**data, "total": 12}).startswith("Question (3 known among the first 12 checked")
    assert (
        R.question_box_label(133, {**data, "known": False, "total": 133, "label": "x"}) == "Question (133 of 133 in x)"
    )


def test_batch_evaluation_runs_static_and_gated_side_by_side(app_env):
    """Modes clamp and gated in one run: one unlearning score per mode, gate-open rates in the
    results, and Figure 5 with one series per mode."""
    at = paper_sweep_form(ns="2")
    at.multiselect(key="b_modes").set_value(["clamp", "gated"])
    ok(at.run())
    at.segmented_control(key="b_gate_how").set_value("value")
    ok(at.run())
    at.number_input(key="b_gate_tau").set_value(0.3)
    run_small_paper_sweep(at)
    per_mode = next(d.value for d in at.dataframe if "unlearning score" in d.value.columns)
    assert len(per_mode) == 2 and "gate open (forget)" in per_mode.columns
    results = next(d.value for d in at.dataframe if "forget_accuracy" in d.value.columns)
    assert len(results) == 5 and "gate open: forget" in results.columns
    assert set(results["mode"].dropna()) == {"clamp", "gated"}
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t.get("name", "") for t in fig["data"]}
    assert any(n.startswith("clamp") for n in names) and any(n.startswith("gated") for n in names), names


def test_selection_summary_says_how_the_target_picks_its_features():
    t = {
        "selection": {"method": "frequency", "n": 50, "threshold": 0.01, "query": "", "background": "webtext-train"},
        "retain_corpora": ["wikitext@train", "webtext-train"],
    }
    assert R.selection_summary(t, "quiz:bio@train") == (
        "the top 50 features by firing frequency on `quiz:bio@train` among those firing on less than 0.01 of the "
        "tokens of `wikitext@train`, `webtext-train`"
    )
    t["selection"].update(method="search", query="Sherlock Holmes", n=20)
    s = R.selection_summary(t, "sherlock@train")
    assert s.startswith('the top 20 features most specific to "Sherlock Holmes" against `webtext-train`')
    assert "0.01" not in s  # the threshold plays no part in a search selection


def test_the_selection_caption_of_a_search_says_the_query_and_not_a_threshold():
    from unlearn_core.ui.selection_view import used_corpora_caption

    res = {
        "method": "search",
        "query": "Sherlock Holmes",
        "background": "webtext-train",
        "sae": "embedded",
        "features": [{"feature": 1}, {"feature": 2}],
        "forget_corpus": "sherlock@train",
        "retain_corpora": ["wikitext@train"],
        "threshold": None,
        "n_tokens": 50000,
    }
    cap = used_corpora_caption(res)
    assert cap.startswith(
        'Of `embedded`, the top 2 features most specific to "Sherlock Holmes" against `webtext-train`'
    )
    assert "`sherlock@train`" in cap and "`wikitext@train`" in cap and "threshold" not in cap


def test_batch_grid_starts_at_the_targets_default_and_refuses_a_negative_or_huge_c(app_env):
    """Issue 35, defects 11 and 12: the grid is prefilled from the target's default (N, c), and
    c = -100 or 1e9 is refused with the reason before anything runs."""
    at = ok(page("batch").run())
    t = T.get_target("bio-basics")
    n, c = t.selection.n, t.intervention.c
    assert at.text_input(key="b_ns").value == ", ".join(map(str, sorted({max(1, n // 2), n})))
    assert at.text_input(key="b_vals").value == f"{c / 4:g}, {c / 2:g}, {c:g}"
    for bad in ("-100, 50", "1e9"):
        at.text_input(key="b_vals").input(bad)
        ok_but_errors = at.run()
        assert any("clamp values c must be between 0 and" in e.value for e in ok_but_errors.error), bad
        assert at.button(key="b_run").disabled
    at.text_input(key="b_vals").input("50")
    ok(at.run())
    assert not at.button(key="b_run").disabled


def test_sweep_progress_counts_configurations_apart_from_the_baseline():
    """Issue 35, defect 8: "1 / 2 configurations · configurations · ETA estimating…" for a run of
    one configuration whose baseline was done, with no ETA for 209 s."""
    j = {"status": "running", "done": 1, "total": 2, "phase": "configurations", "eta_s": None, "started": 1000.0}
    frac, text = R.job_progress(j, now=1209.0)
    assert frac == 0.5
    assert text == (
        "running: 0 / 1 configurations (the clean baseline done) · running 3 min 29 s; "
        "the ETA comes with the first configuration"
    )
    j.update(done=3, total=5, phase="loss baseline", eta_s=75.0, rate_per_min=2.0)
    assert R.job_progress(j, now=1300.0)[1] == (
        "running: 2 / 4 configurations (the clean baseline done) · now: loss baseline · ETA 1 min 15 s · "
        "2.0 configurations/min"
    )
    assert R.job_counts({"done": 5, "total": 5}) == (4, 4)
    # the first 143.5 s of the demo's sweep (setup, then the first selection's pass) had no ETA
    j.update(done=1, total=3, phase="configurations", eta_s=None, rate_per_min=None)
    j.update(stage_done=12, stage_total=48, stage_eta_s=90.0)
    assert R.job_progress(j, now=1300.0)[1] == (
        "running: 0 / 2 configurations (the clean baseline done) · step 12 / 48 of these configurations, "
        "ETA 1 min 30 s; the whole run's ETA comes with the first configuration"
    )
    j.update(done=0, phase="baseline", stage_done=2, stage_total=86, stage_eta_s=60.0)
    assert R.job_progress(j, now=1300.0)[1] == (
        "running: 0 / 2 configurations (the clean baseline first) · now: baseline · step 2 / 86 of this stage, "
        "ETA 1 min 00 s; the whole run's ETA comes with the first configuration"
    )


def test_home_says_what_the_demo_does_in_plain_words_first(app_env):
    """Issue 35, defect 17: the first screen read `quiz:retain!overlaps_bio`, `@train`, "format-matched"
    and DSG. Now a plain sentence; the precise one is in an expander."""
    at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())
    t = T.get_target("bio-basics")
    plan = next(m.value for m in at.markdown if m.value.startswith("The demo finds the"))
    assert f"the {t.selection.n} features" in plan and f"−{t.intervention.c:g}" in plan
    for jargon in ("quiz:", "@train", "format-matched", "cloze", "DSG", "ρ", "τ", "Fisher"):
        assert jargon not in plan, jargon
    precise = next(e for e in at.expander if e.label == "Precisely")
    assert any("quiz:bio" in c.value for c in precise.caption)


def test_figure5_labels_stay_inside_and_legends_name_runs_in_words():
    """Issue 35, defect 9: the star's "no intervention" label (top right of a star at accuracy 1)
    ran into the next plot's title, and the legend showed raw run ids."""
    from unlearn_core.ui import figures as FIG

    rows = [
        {"config": "none", "forget_accuracy": 1.0, "side_effect_mean": 1.0, "loss_added": 0.0},
        {"config": "t=1|n=5|c=400", "forget_accuracy": 0.3, "side_effect_mean": 0.9, "loss_added": 0.04},
    ]
    name = R.run_name({"created": 1_796_000_000.0}, "this run")
    assert re.fullmatch(r"this run \(\w{3} \d{2} \d{2}:\d{2}\)", name)
    fig = FIG.figure5({name: rows})
    stars = [t for t in fig.data if t.name == f"{name}: no intervention"]
    assert [t.textposition for t in stars] == ["bottom left", "bottom right"]  # accuracy plot, loss plot
    assert all(re.search(r"\d{8}-\d{6}", t.name or "") is None for t in fig.data)
