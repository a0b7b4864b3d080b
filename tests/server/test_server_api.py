"""The HTTP API on the tiny backend, in process (FastAPI TestClient).

Every endpoint, the bad-input battery (each case a 4xx with a message, the server still fine
afterwards), bearer-token auth, concurrent requests with different interventions, and
recovery from corrupt disk-cache entries. Real question sets and corpora come from
../shared/data with small limits and token budgets.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from api_helpers import app, client, engine, lock, ok, small_job, wait_job, wait_ok  # noqa: F401 (fixtures)
from fastapi.testclient import TestClient

from unlearn_core.evaluation import mcq as M
from unlearn_core.evaluation import metrics as MT
from unlearn_core.features import stats as F
from unlearn_core.features import text_search as TXS
from unlearn_core.method.interventions import Intervention
from unlearn_core.server import create_app

GEO = "mmlu:high_school_geography"  # short questions: fit the tiny model's 512-token context
IV = {"sae": "tiny", "features": [2, 3, 4], "value": 20.0, "mode": "clamp"}


def first_ids(client, set_: str = "wmdp-bio", n: int = 3) -> list[str]:
    return [q["id"] for q in ok(client.get("/api/questions", params={"set": set_, "limit": n}))["questions"]]


# ---------------------------------------------------------------- every endpoint


def test_health_and_info(client):
    h = ok(client.get("/api/health"))
    assert h["status"] == "ok" and h["auth_required"] is False
    info = ok(client.get("/api/info"))
    assert info["status"] == "ok" and info["model"] == "tiny" and info["n_ctx"] == 512
    assert [s["key"] for s in info["saes"]] == ["tiny"]
    assert info["limits"]["max_text_chars"] == 8_000 and info["limits"]["max_features"] == 512
    assert info["limits"]["max_values"] == 64 and info["limits"]["max_abs_clamp"] == 1e4
    names = [s["name"] for s in info["question_sets"]]
    assert names[:4] == ["quiz:bio", "quiz:sherlock", "quiz:retain", "quiz:retain!overlaps_bio"]
    assert names.index("wmdp-bio") < names.index("mmlu:side-effects") < names.index(GEO)
    assert len(names) == len(set(names))
    assert {"hits", "misses", "entries"} <= set(info["activation_cache"])
    assert "clamp" in info["modes"] and "webtext" in info["corpora"]


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    paths = ok(client.get("/openapi.json"))["paths"]
    for p in [
        "/api/health",
        "/api/info",
        "/api/tokenize",
        "/api/activations",
        "/api/features/dashboard",
        "/api/features/search",
        "/api/features/select",
        "/api/questions",
        "/api/mcq",
        "/api/generate",
        "/api/loss_added",
        "/api/perplexity",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/targets",
        "/api/targets/select",
        "/api/demo",
    ]:
        assert p in paths


def test_tokenize(client):
    t = ok(client.post("/api/tokenize", json={"text": "hello"}))
    assert t["tokens"] == ["<bos>", "h", "e", "l", "l", "o"] and t["n_tokens"] == 6 and len(t["ids"]) == 6


def test_activations_match_engine_and_use_the_lru(client, engine, lock):
    text = "The virus spreads quickly."
    before = ok(client.get("/api/info"))["activation_cache"]
    a = ok(client.post("/api/activations", json={"text": text, "features": [1, 5], "top_k": 4}))
    b = ok(client.post("/api/activations", json={"text": text, "features": [1, 5], "top_k": 4}))
    assert a["cached"] is False and b["cached"] is True
    after = ok(client.get("/api/info"))["activation_cache"]
    assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"] + 1
    with lock:
        ref = F.token_activations(engine, "tiny", text, [1, 5], top_k=4)
    for r in (a, b):
        assert r["tokens"] == ref["tokens"] and r["features"] == [1, 5]
        assert sum(r["values"], []) == pytest.approx(sum(ref["values"], []), abs=1e-5)
        assert [[i for i, _ in t] for t in r["top_features"]] == [[i for i, _ in t] for t in ref["top_features"]]
    assert all(row[0] > 0 for row in a["values"][1:])  # feature 1 always fires
    assert a["values"][0] == [0.0, 0.0]  # BOS excluded


def test_search_matches_engine_and_reuses_activations(client, engine, lock):
    text = "Anthrax spores survive for decades."
    ok(client.post("/api/activations", json={"text": text}))
    s = ok(client.post("/api/features/search", json={"text": text, "k": 5, "background_tokens": 200}))
    assert s["cached"] is True and len(s["features"]) == 5
    with lock:  # the default: specificity against webtext, dense features last
        st = F.feature_stats(engine, "tiny", "webtext", n_tokens=200)
        ref = TXS.search_by_text(
            engine, "tiny", text, k=5, background=st.freq, background_max=st.max_act, rank="specificity"
        )
    assert [r["feature"] for r in s["features"]] == [r["feature"] for r in ref]
    assert [r["dense"] for r in s["features"]] == [r["dense"] for r in ref]
    plain = ok(client.post("/api/features/search", json={"text": text, "k": 5, "rank": "max", "background": None}))
    with lock:
        ref = TXS.search_by_text(engine, "tiny", text, k=5)
    assert [r["feature"] for r in plain["features"]] == [r["feature"] for r in ref]
    bg = ok(
        client.post(
            "/api/features/search",
            json={"text": text, "k": 5, "background": "webtext", "background_tokens": 200, "rank": "max"},
        )
    )
    assert all(r["score"] <= r["max_act"] + 1e-6 for r in bg["features"])
    r = client.post("/api/features/search", json={"text": text, "background": None})
    assert r.status_code == 400 and "needs a background corpus" in r.text


def test_search_reads_a_short_query_in_context(client, engine, lock):
    body = {"text": "spores", "k": 5, "background_tokens": 200}
    s = ok(client.post("/api/features/search", json=body))
    alone = ok(client.post("/api/features/search", json={**body, "context": False}))
    assert s["in_context"] is True and alone["in_context"] is False
    with lock:
        st = F.feature_stats(engine, "tiny", "webtext", n_tokens=200)
        kw = {"k": 5, "background": st.freq, "background_max": st.max_act, "rank": "specificity"}
        ref, ref_alone = (TXS.search_by_text(engine, "tiny", "spores", context=c, **kw) for c in (True, False))
    assert [(r["feature"], round(r["score"], 4)) for r in s["features"]] == [
        (r["feature"], round(r["score"], 4)) for r in ref
    ]
    assert [r["feature"] for r in alone["features"]] == [r["feature"] for r in ref_alone]


def test_dashboard(client):
    d = ok(
        client.post(
            "/api/features/dashboard",
            json={"feature": 2, "corpora": ["webtext", "wmdp-bio-text"], "n_tokens": 200, "k": 2},
        )
    )
    assert d["sae"] == "tiny" and d["feature"] == 2 and set(d["corpora"]) == {"webtext", "wmdp-bio-text"}
    c = d["corpora"]["webtext"]
    assert c["n_tokens"] == 200 and 0 <= c["freq"] <= 1 and len(c["examples"]["top"]) <= 2
    assert len(d["logits"]["top"]) == 10 and d["description"].startswith("[automatic]")
    assert d["neuronpedia"]["available"] is False  # the tiny SAE has no Neuronpedia id: no network


def test_select_has_both_frequencies(client):
    s = ok(
        client.post(
            "/api/features/select",
            json={
                "forget": "wmdp-bio-text@train",
                "retain": "wikitext@train",
                "threshold": 0.5,
                "n": 4,
                "n_tokens": 200,
                "describe": True,
            },
        )
    )
    assert 1 <= len(s["features"]) <= 4
    freqs = [r["forget_freq"] for r in s["features"]]
    assert freqs == sorted(freqs, reverse=True)
    for r in s["features"]:
        assert r["retain_freq"] < 0.5 and r["forget_freq"] > 0 and r["description"].startswith("[automatic]")


def test_questions_pages_and_known_filter(client):
    p0 = ok(client.get("/api/questions", params={"set": "wmdp-bio", "limit": 3}))
    p1 = ok(client.get("/api/questions", params={"set": "wmdp-bio", "limit": 2, "offset": 1}))
    assert p0["label"] == "WMDP-bio" and p0["is_fallback"] is False and p0["total"] > 1000
    assert [q["id"] for q in p0["questions"]][1:] == [q["id"] for q in p1["questions"]]
    q = p0["questions"][0]
    assert set(q) == {"id", "question", "choices", "answer", "subject", "source", "extra"} and len(q["choices"]) == 4
    side = ok(client.get("/api/questions", params={"set": "mmlu:side-effects", "limit": 2}))
    assert side["total"] > 500 and side["questions"][0]["source"] == "mmlu"
    k = ok(client.get("/api/questions", params={"set": GEO, "limit": 1, "known": "true"}))
    assert k["known"] is True and len(k["questions"]) <= 1


def test_mcq_curve_matches_score_curve(client, engine, lock, app):
    qid = first_ids(client)[0]
    values = [0.0, 20.0, 100.0]
    r = ok(
        client.post("/api/mcq", json={"question_id": qid, "set": "wmdp-bio", "interventions": [IV], "values": values})
    )
    assert r["question"]["id"] == qid and r["set_label"] == "WMDP-bio" and r["scoring"] == "letter"
    assert [p["value"] for p in r["curve"]] == values
    _, q = app.state.server.find_question("wmdp-bio", qid)
    with lock:
        base = M.score_question(engine, q)
        curve = M.score_curve(engine, q, [Intervention("tiny", (2, 3, 4), 20.0)], values)
    assert r["base"]["probs"] == pytest.approx(base.probs, abs=1e-6)
    for p, s in zip(r["curve"], curve):
        assert p["score"]["probs"] == pytest.approx(s.probs, abs=1e-6)
    one = ok(client.post("/api/mcq", json={"question_id": qid, "interventions": [IV]}))
    assert len(one["curve"]) == 1 and one["curve"][0]["value"] is None
    assert one["curve"][0]["score"]["probs"] == pytest.approx(r["curve"][1]["score"]["probs"], abs=1e-6)
    none = ok(client.post("/api/mcq", json={"question_id": qid}))
    assert none["curve"] == [] and none["interventions"] == []


def test_mcq_inline_question(client):
    q = {"question": "What is 2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}
    r = ok(client.post("/api/mcq", json={"question": q, "interventions": [IV], "values": [5, 50]}))
    assert r["question"]["source"] == "inline" and len(r["curve"]) == 2 and len(r["base"]["probs"]) == 4


def test_mcq_inline_blank_and_fill_blank_score_as_the_bench_does(client, engine, lock):
    """Issue 36: a script written against the API must reproduce the attack bench. The strict known
    filter scores a question with its text removed, and a fill_blank probe is scored right after
    its sentence: both were impossible inline (empty text refused; always the quiz format)."""
    from unlearn_core.data.questions import Question
    from unlearn_core.evaluation.mcq import score_questions

    choices = ["fleas", "lice", "ticks", "mosquitoes"]
    sent = {"question": "Malaria is spread by", "choices": choices, "answer": 3, "subject": "bio"}
    before = engine.settings.scoring
    engine.settings.scoring = "cloze"  # the embedded model's scoring, where the probe kind matters
    try:
        for body, extra in (
            ({**sent, "question": ""}, {}),
            ({**sent, "probe": "fill_blank"}, {"probe": "fill_blank"}),
            (sent, {}),
        ):
            r = ok(client.post("/api/mcq", json={"question": body}))
            assert r["scoring"] == "cloze"
            q = Question("x", body["question"], tuple(choices), 3, "bio", "inline", extra)
            with lock:
                ref = score_questions(engine, [q])[0]
            assert r["base"]["probs"] == pytest.approx(list(ref.probs), abs=1e-6), body
            assert r["prompts"][0].startswith("Malaria is spread by fleas" if extra else "Question:"), body
        quiz = ok(client.post("/api/mcq", json={"question": sent}))["base"]["probs"]
        probe = ok(client.post("/api/mcq", json={"question": {**sent, "probe": "fill_blank"}}))["base"]["probs"]
        assert quiz != pytest.approx(probe, abs=1e-6)  # the probe kind changes what is scored
    finally:
        engine.settings.scoring = before
    bad = client.post("/api/mcq", json={"question": {**sent, "probe": "riddle"}})
    assert bad.status_code == 422


def test_generate(client, engine, lock):
    r = ok(client.post("/api/generate", json={"prompt": "Hello", "interventions": [IV], "max_new_tokens": 8}))
    with lock:
        ref = MT.generate_pair(engine, "Hello", [Intervention("tiny", (2, 3, 4), 20.0)], max_new_tokens=8)
    assert (r["base"], r["intervened"]) == (ref["base"], ref["intervened"])
    plain = ok(client.post("/api/generate", json={"prompt": "Hello", "max_new_tokens": 4}))
    assert plain["intervened"] is None


def test_loss_added_and_perplexity_match_metrics(client, engine, lock):
    la = ok(client.post("/api/loss_added", json={"corpus": "webtext", "interventions": [IV], "n_tokens": 200}))
    ppl = ok(
        client.post(
            "/api/perplexity", json={"corpus": "wikitext", "part": "heldout", "interventions": [IV], "n_tokens": 200}
        )
    )
    ivs = [Intervention("tiny", (2, 3, 4), 20.0)]
    with lock:
        ref = MT.loss_added(engine, F.corpus_docs(engine, "webtext"), ivs, n_tokens=200, corpus="webtext")
        docs = F.corpus_docs(engine, "wikitext@heldout")
        p_base, p_int = MT.perplexity(engine, docs, None, n_tokens=200), MT.perplexity(engine, docs, ivs, n_tokens=200)
    assert la["n_tokens"] == ref.n_tokens == 200
    assert la["loss_added"] == pytest.approx(ref.loss_added, abs=1e-4)
    assert ppl["base"]["perplexity"] == pytest.approx(p_base["perplexity"], rel=1e-4)
    assert ppl["intervened"]["perplexity"] == pytest.approx(p_int["perplexity"], rel=1e-4)


def test_job_runs_and_persists(client, engine):
    created = ok(client.post("/api/jobs", json=small_job()), 201)
    assert created["total"] == 5
    j = wait_job(client, created["id"])
    assert j["status"] == "done" and j["done"] == j["total"] == 5 and j["error"] is None
    rows = {r["config"]: r for r in j["results"]}
    assert set(rows) == {"none", "t=0.5|n=1|c=10", "t=0.5|n=1|c=50", "t=0.5|n=2|c=10", "t=0.5|n=2|c=50"}
    base = rows["none"]
    assert base["features"] == [] and base["loss_added"] == 0.0 and base["n_questions"] == {"forget": 2, GEO: 2}
    r = rows["t=0.5|n=2|c=50"]
    assert len(r["features"]) == 2 and r["mode"] == "clamp" and r["value"] == 50.0 and r["threshold"] == 0.5
    assert 0 <= r["forget_accuracy"] <= 1 and r["side_effect_mean"] == r["side_effect_accuracy"][GEO]
    assert r["loss_added"] is not None
    folder = Path(engine.settings.cache_dir) / "jobs" / created["id"]
    lines = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert sorted(x["config"] for x in lines) == sorted(rows)
    assert json.loads((folder / "spec.json").read_text())["spec"]["ns"] == [1, 2]
    assert json.loads((folder / "status.json").read_text())["status"] == "done"
    listed = ok(client.get("/api/jobs"))["jobs"]
    assert created["id"] in [x["id"] for x in listed]


def test_job_cancel(client):
    created = ok(client.post("/api/jobs", json=small_job(ns=[1, 2, 3], delay_per_config=1.0)), 201)
    end = time.time() + 30
    while ok(client.get(f"/api/jobs/{created['id']}"))["done"] < 1:
        assert time.time() < end
        time.sleep(0.05)
    s = ok(client.post(f"/api/jobs/{created['id']}/cancel"))
    assert s["id"] == created["id"]
    j = wait_job(client, created["id"])
    assert j["status"] == "cancelled" and 1 <= j["done"] < j["total"]


# ---------------------------------------------------------------- bad input


LONG = "x" * 20_001
NaN_BODY = '{"question_id": "q", "interventions": [{"sae": "tiny", "features": [1], "value": NaN}]}'
INF_BODY = '{"question_id": "q", "interventions": [{"sae": "tiny", "features": [1], "value": Infinity}]}'
BAD = [
    # (name, method, path, json body or raw string, expected status)
    ("empty text", "post", "/api/tokenize", {"text": ""}, 422),
    ("text over limit", "post", "/api/tokenize", {"text": LONG}, 422),
    ("text missing", "post", "/api/tokenize", {}, 422),
    ("malformed json", "post", "/api/tokenize", "{not json", 422),
    ("json list body", "post", "/api/tokenize", "[1, 2]", 422),
    ("unknown field", "post", "/api/tokenize", {"text": "a", "txt": "b"}, 422),
    ("longer than context", "post", "/api/activations", {"text": "y" * 600}, 400),
    ("feature out of range", "post", "/api/activations", {"text": "hi", "features": [64]}, 400),
    ("huge feature id", "post", "/api/activations", {"text": "hi", "features": [10**30]}, 400),
    ("negative feature", "post", "/api/activations", {"text": "hi", "features": [-1]}, 422),
    ("unknown sae", "post", "/api/activations", {"text": "hi", "sae": "nope"}, 404),
    ("top_k too big", "post", "/api/activations", {"text": "hi", "top_k": 10_000}, 422),
    ("NaN clamp", "post", "/api/mcq", NaN_BODY, 422),
    ("inf clamp", "post", "/api/mcq", INF_BODY, 422),
    ("huge clamp", "post", "/api/mcq", {"question_id": "q", "interventions": [{**IV, "value": 1e5}]}, 422),
    (
        "NaN in values",
        "post",
        "/api/mcq",
        '{"question_id": "q", "interventions": [{"features": [1]}], "values": [1.0, NaN]}',
        422,
    ),
    ("too many values", "post", "/api/mcq", {"question_id": "q", "interventions": [IV], "values": [1.0] * 65}, 422),
    (
        "too many features",
        "post",
        "/api/mcq",
        {"question_id": "q", "interventions": [{**IV, "features": list(range(513))}]},
        422,
    ),
    (
        "too many features in total",
        "post",
        "/api/mcq",
        {"question_id": "q", "interventions": [{**IV, "features": list(range(300))}] * 2},
        422,
    ),
    ("too many interventions", "post", "/api/mcq", {"question_id": "q", "interventions": [IV] * 9}, 422),
    (
        "too many features in total: generate",
        "post",
        "/api/generate",
        {"prompt": "hi", "interventions": [{**IV, "features": list(range(300))}] * 2},
        422,
    ),
    (
        "too many features in total: loss added",
        "post",
        "/api/loss_added",
        {"interventions": [{**IV, "features": list(range(300))}] * 2},
        422,
    ),
    ("loss added without interventions", "post", "/api/loss_added", {"interventions": []}, 422),
    (
        "too many features in total: perplexity",
        "post",
        "/api/perplexity",
        {"interventions": [{**IV, "features": list(range(300))}] * 2},
        422,
    ),
    ("perplexity ctx too small", "post", "/api/perplexity", {"ctx": 2}, 422),
    ("bad mode", "post", "/api/mcq", {"question_id": "q", "interventions": [{**IV, "mode": "explode"}]}, 422),
    (
        "clamp without features",
        "post",
        "/api/mcq",
        {"question_id": "wmdp-bio:bio:5ef94a561c", "interventions": [{**IV, "features": []}]},
        400,
    ),
    (
        "intervention feature out of range",
        "post",
        "/api/mcq",
        {"question_id": "wmdp-bio:bio:5ef94a561c", "interventions": [{**IV, "features": [64]}]},
        400,
    ),
    (
        "intervention unknown sae",
        "post",
        "/api/mcq",
        {"question_id": "wmdp-bio:bio:5ef94a561c", "interventions": [{**IV, "sae": "nope"}]},
        404,
    ),
    ("unknown question id", "post", "/api/mcq", {"question_id": "no-such-question"}, 404),
    ("unknown question set", "post", "/api/mcq", {"question_id": "q", "set": "trivia"}, 404),
    ("unknown mmlu subject", "post", "/api/mcq", {"question_id": "q", "set": "mmlu:astrology"}, 404),
    ("no question", "post", "/api/mcq", {"interventions": []}, 422),
    (
        "question and id",
        "post",
        "/api/mcq",
        {"question_id": "q", "question": {"question": "a", "choices": ["1", "2", "3", "4"], "answer": 0}},
        422,
    ),
    (
        "three choices",
        "post",
        "/api/mcq",
        {"question": {"question": "a", "choices": ["1", "2", "3"], "answer": 0}},
        422,
    ),
    (
        "answer out of range",
        "post",
        "/api/mcq",
        {"question": {"question": "a", "choices": ["1", "2", "3", "4"], "answer": 4}},
        422,
    ),
    ("values without interventions", "post", "/api/mcq", {"question_id": "q", "values": [1.0]}, 422),
    (
        "long inline question",
        "post",
        "/api/mcq",
        {"question": {"question": "z" * 900, "choices": ["1", "2", "3", "4"], "answer": 0}},
        400,
    ),
    ("dashboard feature out of range", "post", "/api/features/dashboard", {"feature": 64, "n_tokens": 200}, 400),
    (
        "dashboard unknown corpus",
        "post",
        "/api/features/dashboard",
        {"feature": 1, "corpora": ["nonsense"], "n_tokens": 200},
        400,
    ),
    (
        "corpus as a file path",
        "post",
        "/api/features/dashboard",
        {"feature": 1, "corpora": ["/etc/passwd"], "n_tokens": 200},
        400,
    ),
    ("too many corpora", "post", "/api/features/dashboard", {"feature": 1, "corpora": ["webtext"] * 5}, 422),
    ("dashboard huge n_tokens", "post", "/api/features/dashboard", {"feature": 1, "n_tokens": 10**9}, 422),
    ("select zero threshold", "post", "/api/features/select", {"threshold": 0}, 422),
    ("select NaN threshold", "post", "/api/features/select", '{"threshold": NaN}', 422),
    ("select bad part", "post", "/api/features/select", {"forget": "webtext@bogus", "n_tokens": 200}, 400),
    ("search empty", "post", "/api/features/search", {"text": ""}, 422),
    ("search unknown background", "post", "/api/features/search", {"text": "a", "background": "nope"}, 400),
    ("questions unknown set", "get", "/api/questions?set=trivia", None, 404),
    ("questions unknown subject", "get", "/api/questions?set=mmlu:astrology", None, 404),
    ("questions limit 0", "get", "/api/questions?limit=0", None, 422),
    ("questions huge limit", "get", "/api/questions?limit=1000000", None, 422),
    ("questions negative offset", "get", "/api/questions?offset=-1", None, 422),
    ("questions bad bool", "get", "/api/questions?known=maybe", None, 422),
    ("generate too many tokens", "post", "/api/generate", {"prompt": "a", "max_new_tokens": 10_000}, 422),
    ("generate NaN temperature", "post", "/api/generate", '{"prompt": "a", "temperature": NaN}', 422),
    ("generate past context", "post", "/api/generate", {"prompt": "a" * 500, "max_new_tokens": 100}, 400),
    ("loss without interventions", "post", "/api/loss_added", {"interventions": []}, 422),
    ("loss huge budget", "post", "/api/loss_added", {"interventions": [IV], "n_tokens": 10**9}, 422),
    (
        "loss unknown corpus",
        "post",
        "/api/loss_added",
        {"interventions": [IV], "corpus": "x.jsonl", "n_tokens": 100},
        400,
    ),
    ("perplexity bad part", "post", "/api/perplexity", {"part": "bogus"}, 422),
    (
        "perplexity conflicting part",
        "post",
        "/api/perplexity",
        {"corpus": "wikitext@train", "part": "heldout", "n_tokens": 100},
        400,
    ),
    ("job zero threshold", "post", "/api/jobs", {"thresholds": [0.0]}, 422),
    ("job negative c (issue 35, defect 11)", "post", "/api/jobs", small_job(values=[-100.0, 50.0]), 422),
    ("job c of 1e9", "post", "/api/jobs", small_job(values=[1e9]), 422),
    (
        "job too many configs",
        "post",
        "/api/jobs",
        {"thresholds": [i / 100 for i in range(1, 17)], "ns": list(range(1, 17)), "values": list(range(64))},
        422,
    ),
    ("job unknown set", "post", "/api/jobs", small_job(forget_set="trivia"), 404),
    ("job unknown corpus", "post", "/api/jobs", small_job(loss_corpus="/etc/passwd"), 400),
    ("job unknown sae", "post", "/api/jobs", small_job(sae="nope"), 404),
    ("job NaN value", "post", "/api/jobs", '{"values": [NaN]}', 422),
    ("unknown job", "get", "/api/jobs/nope", None, 404),
    ("job path traversal", "get", "/api/jobs/..%2F..%2Fetc", None, 404),
    ("cancel unknown job", "post", "/api/jobs/nope/cancel", None, 404),
]


@pytest.mark.parametrize("name,method,path,body,status", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_with_a_message(client, name, method, path, body, status):
    if isinstance(body, str):
        r = client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.request(method, path, json=body)
    assert r.status_code == status, (name, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail
    assert len(r.text) < 5_000  # never echoes huge inputs
    assert client.get("/api/info").status_code == 200


def test_internal_errors_are_generic_500s(engine, monkeypatch, caplog):
    import unlearn_core.server.routers.features as RF

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(RF, "token_activations", boom)
    app = create_app(lambda: engine, token="")
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ok(c)
        r = c.post("/api/activations", json={"text": "hi"})
        assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text
        assert c.get("/api/info").status_code == 200
    assert "secret internals" in caplog.text  # logged on the server side


# ---------------------------------------------------------------- loading state


def test_loading_state_then_ok(engine):
    gate = threading.Event()

    def slow():
        gate.wait(30)
        return engine

    app = create_app(slow, token="", load_wait_s=0.2)
    with TestClient(app) as c:
        assert ok(c.get("/api/health"))["status"] == "loading"
        assert ok(c.get("/api/info"))["status"] == "loading"
        r = c.post("/api/tokenize", json={"text": "hi"})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        gate.set()
        wait_ok(c)
        assert ok(c.post("/api/tokenize", json={"text": "hi"}))["n_tokens"] == 3


def test_failed_load_is_reported(tmp_path):
    def broken():
        raise OSError("weights missing")

    with TestClient(create_app(broken, token="")) as c:
        end = time.time() + 10
        while c.get("/api/health").json()["status"] == "loading":
            assert time.time() < end
            time.sleep(0.02)
        h = ok(c.get("/api/health"))
        assert h["status"] == "error" and "weights missing" in h["detail"]
        assert c.post("/api/tokenize", json={"text": "hi"}).status_code == 503


# ---------------------------------------------------------------- auth


def _other_cache(engine, tmp_path):
    """The same model and SAE with another cache dir, so a second app has its own jobs folder."""
    return dataclasses.replace(engine, settings=dataclasses.replace(engine.settings, cache_dir=str(tmp_path)))


@pytest.mark.parametrize("from_env", [False, True])
def test_bearer_token(engine, tmp_path, monkeypatch, from_env):
    other = _other_cache(engine, tmp_path)
    if from_env:
        monkeypatch.setenv("UNLEARN_TOKEN", "s3cret-token")
        app = create_app(lambda: other)
    else:
        monkeypatch.delenv("UNLEARN_TOKEN", raising=False)
        app = create_app(lambda: other, token="s3cret-token")
    with TestClient(app) as c:
        wait_ok(c)
        assert ok(c.get("/api/health"))["auth_required"] is True
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret-token"},
            {"Authorization": "s3cret-token"},
        ):
            for method, path, body in [
                ("get", "/api/info", None),
                ("post", "/api/tokenize", {"text": "a"}),
                ("get", "/api/jobs", None),
                ("get", "/api/questions", None),
                ("post", "/api/mcq", {"question_id": "q"}),
            ]:
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (headers, path, r.text)
                assert "s3cret" not in r.text
        good = {"Authorization": "Bearer s3cret-token"}
        assert ok(c.get("/api/info", headers=good))["status"] == "ok"
        assert ok(c.post("/api/tokenize", json={"text": "a"}, headers=good))["n_tokens"] == 2
        r = c.post("/api/jobs", json=small_job(delay_per_config=1.0), headers=good)
        assert r.status_code == 400 and "--tiny" in r.json()["detail"]  # test option off by default


def test_no_token_means_open(engine, tmp_path, monkeypatch):
    monkeypatch.delenv("UNLEARN_TOKEN", raising=False)
    with TestClient(create_app(lambda: _other_cache(engine, tmp_path))) as c:
        wait_ok(c)
        assert ok(c.get("/api/health"))["auth_required"] is False
        assert ok(c.get("/api/info"))["status"] == "ok"


# ---------------------------------------------------------------- concurrency


def test_parallel_requests_with_different_interventions_match_serial(client):
    ids = first_ids(client, n=2)
    ivsets = [
        [],
        [{"features": [1], "value": 100.0}],
        [{"features": [2, 3, 4], "value": 20.0}],
        [{"features": [5, 6], "value": 5.0, "mode": "add"}],
        [{"features": [7], "mode": "zero"}],
        [{"features": [], "mode": "reconstruct"}],
        [{"features": [1, 2], "value": 50.0}, {"features": [9], "value": 10.0, "mode": "add"}],
    ]
    calls = [(qid, i) for qid in ids for i in range(len(ivsets))]

    def run(call):
        qid, i = call
        body = {"question_id": qid, "interventions": ivsets[i]}
        if ivsets[i]:
            body["values"] = [10.0, 30.0]
        r = client.post("/api/mcq", json=body)
        assert r.status_code == 200, r.text
        d = r.json()
        return d["base"]["probs"], [p["score"]["probs"] for p in d["curve"]]

    serial = {c: run(c) for c in calls}
    assert len({json.dumps(v[1]) for v in serial.values()}) > len(ids)  # the interventions do differ
    shuffled = calls * 3
    random.Random(0).shuffle(shuffled)
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(run, shuffled))
    for c, res in zip(shuffled, parallel):
        assert res == serial[c], c


def test_parallel_mixed_endpoints_do_not_leak_hooks(client):
    """Generation with a heavy clamp running next to clean generations must not change them."""
    clean = ok(client.post("/api/generate", json={"prompt": "Once", "max_new_tokens": 6}))["base"]
    heavy = [{"features": list(range(1, 64)), "value": 1000.0}]

    def job(i):
        if i % 2:
            return client.post(
                "/api/generate", json={"prompt": "Once", "max_new_tokens": 6, "interventions": heavy}
            ).json()["base"]
        return client.post("/api/generate", json={"prompt": "Once", "max_new_tokens": 6}).json()["base"]

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(job, range(12))) == {clean}


# ---------------------------------------------------------------- corrupt cache entries


def test_corrupt_known_questions_cache_is_rebuilt(client, engine):
    params = {"set": GEO, "limit": 1, "offset": 5, "known": "true"}
    first = ok(client.get("/api/questions", params=params))
    folder = Path(engine.settings.cache_dir) / "known"
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    assert files
    target = files[-1]
    target.write_text("{ this is not json")
    again = ok(client.get("/api/questions", params=params))
    assert again["questions"] == first["questions"]
    assert isinstance(json.loads(target.read_text()), list)  # rebuilt


def test_corrupt_feature_stats_cache_is_rebuilt(client, engine):
    body = {"forget": "sherlock@train", "retain": "pile", "threshold": 0.9, "n": 3, "n_tokens": 150}
    first = ok(client.post("/api/features/select", json=body))
    folder = Path(engine.settings.cache_dir) / "feature_stats"
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)[-2:]
    for f in files:
        f.write_bytes(b"\x00junk" * 10)
    again = ok(client.post("/api/features/select", json=body))
    assert again["features"] == first["features"]
    from safetensors.torch import load_file

    for f in files:
        assert "freq" in load_file(str(f))  # rebuilt
