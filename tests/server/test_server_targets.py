"""Unlearning targets over HTTP, on the tiny backend (FastAPI TestClient), in test_server_api's style.

/api/targets, /api/targets/select and /api/demo against the engine functions they wrap
(``targets.select_for_target``, ``demo.run_demo``), the quiz question sets and the strict
known filter, quiz corpora, jobs that take their settings from a target (and old job specs
that still resume), bad input, the rule that the server reads only the files its own
targets name, and targets defined in the app (POST / DELETE /api/targets). Real quizzes and
corpora come from ../shared/data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import pytest
from api_helpers import answer, app, client, engine, lock, ok, run_task, wait_job, wait_ok  # noqa: F401 (fixtures)
from fastapi.testclient import TestClient

from unlearn_core.evaluation import demo as DM
from unlearn_core.evaluation import mcq as M
from unlearn_core.evaluation import targets as T
from unlearn_core.features import stats as F
from unlearn_core.server import create_app
from unlearn_core.server import target_api as TA

GEO = "mmlu:high_school_geography"
JOB_KEYS = {
    "config",
    "threshold",
    "n",
    "value",
    "mode",
    "features",
    "forget_accuracy",
    "side_effect_accuracy",
    "side_effect_mean",
    "loss_added",
    "n_questions",
    "seconds",
    "note",
    "gate",
    "gate_open",
    "variant",
}


@contextlib.contextmanager
def _serving(engine):
    """A client of a fresh server over ``engine``, once its model is ready (for engines with settings
    of their own: another cache, another targets file)."""
    with TestClient(create_app(lambda: engine, token="")) as c:
        wait_ok(c)
        yield c


# ---------------------------------------------------------------- targets, selection, demo


def test_targets_list(client):
    d = ok(client.get("/api/targets"))
    assert d["default"] == "bio-basics"
    by = {t["name"]: t for t in d["targets"]}
    assert {"bio-basics", "sherlock", "wmdp-bio"} <= set(by)
    for name, t in T.load_targets().items():
        got = {
            k: v
            for k, v in by[name].items()
            if k not in ("resolved_forget_corpus", "forget_corpus_note", "defined_in_app")
        }
        assert got == json.loads(json.dumps(t.to_dict()))  # tuples as lists
        assert by[name]["defined_in_app"] is False
    assert by["bio-basics"]["resolved_forget_corpus"] == "quiz:bio@train"
    assert by["bio-basics"]["forget_corpus_note"] == ""
    wmdp = by["wmdp-bio"]  # the gated forget corpus is not in ../shared/data: the labelled stand-in
    assert wmdp["resolved_forget_corpus"] == "wmdp-bio-text@train" and "not available" in wmdp["forget_corpus_note"]


def test_target_select_matches_the_engine(client, engine, lock):
    r = answer(client, "/api/targets/select", {"target": "bio-basics", "n": 5})
    bio = T.get_target("bio-basics")
    with lock:
        ref = T.select_for_target(engine, bio, "tiny", n=5)
    assert r["forget_corpus"] == bio.forget_corpus == "quiz:bio@train"
    assert r["retain_corpora"] == list(bio.retain_corpora) and len(r["retain_corpora"]) >= 2
    assert r["threshold"] == 1.0 and "test backend" in r["note"]  # the tiny backend's relaxed threshold, said so
    assert r["sae"] == "tiny" and r["n_tokens"] == bio.selection.tokens
    assert [x["feature"] for x in r["features"]] == [x["feature"] for x in ref["features"]] and len(r["features"]) == 5
    for row, want in zip(r["features"], ref["features"]):
        assert row["forget_freq"] == pytest.approx(want["forget_freq"], abs=1e-6)
        assert set(row["retain_freqs"]) == set(r["retain_corpora"])
        assert row["retain_freq"] == pytest.approx(max(row["retain_freqs"].values()), abs=1e-6)  # the max
    strict = answer(
        client, "/api/targets/select", {"target": "bio-basics", "threshold": 0.99, "n": 50, "describe": True}
    )
    assert strict["threshold"] == 0.99 and "test backend" not in strict["note"]
    assert all(x["retain_freq"] < 0.99 for x in strict["features"])
    assert all(x["description"].startswith("[automatic]") for x in strict["features"])


def test_demo_matches_run_demo(client, engine, lock):
    r = run_task(client, "/api/demo", {"target": "bio-basics"})  # the default scan: past the synchronous limit
    with lock:
        ref = DM.run_demo(engine, "bio-basics")
    assert r == json.loads(json.dumps(ref))
    assert r["forget_example"] is None  # the tiny model knows nothing: nothing to forget, and it says so
    assert r["n_checked_forget"] == DM.MAX_SCAN and f"flipped none of the first {DM.MAX_SCAN}" in r["summary"]
    short = ok(client.post("/api/demo", json={"target": "bio-basics", "max_scan": 3}))
    assert short["n_checked_forget"] == short["n_checked_retain"] == 3
    bio = T.get_target("bio-basics")
    assert short["intervention"] == r["intervention"] and r["intervention"]["c"] == bio.intervention.c
    assert len(r["intervention"]["features"]) == bio.selection.n


def test_demo_examples_are_serialized(client, engine, monkeypatch):
    """With every question the tiny model answers right counted as known, the demo returns the first
    flipped forget question and the first retain question that stays right, with both scores and
    their verdicts."""

    real_chunk, real = DM._chunk_examples, DM.score_questions

    def any_confidence(eng, qs, iv, scoring, min_conf, guard, skip):  # the tiny model is never sure
        return real_chunk(eng, qs, iv, scoring, 0.0, guard, skip)

    def score(eng, qs, ivs=None, scoring=None, batch_size=8):
        # blanked questions count as wrong (a right answer is all it takes to be known); the tiny
        # model flips every retain answer at any c: keep them
        out = []
        for q in qs:
            x = real(eng, [q], None if q.id.startswith("quiz-retain:") else ivs, scoring=scoring)[0]
            out.append(dataclasses.replace(x, correct=False) if q.id.endswith("#blank") else x)
        return out

    monkeypatch.setattr(DM, "_chunk_examples", any_confidence)
    monkeypatch.setattr(DM, "score_questions", score)
    static = TA.default_intervention  # bio-basics' default is gated; on the tiny model its gate rarely opens

    def static_default(*a, **k):
        return dataclasses.replace(static(*a, **k), mode="clamp", gate=None)

    monkeypatch.setattr(TA, "default_intervention", static_default)
    r = run_task(client, "/api/demo", {"target": "bio-basics", "max_scan": 40})
    f, k = r["forget_example"], r["retain_example"]
    assert f is not None and k is not None, r
    assert f["intervened"]["correct"] is False and k["intervened"]["correct"] is True
    assert f["question"]["id"].startswith("quiz-bio:") and f["question"]["extra"]["kind"] == "bio"
    assert k["question"]["id"].startswith("quiz-retain:") and k["question"]["extra"]["overlaps_bio"] is False
    assert len(f["base"]["probs"]) == 4 and r["summary"].startswith("The clamp made the model forget")
    assert f["verdict"]["kind"] == "forgotten" and k["verdict"]["kind"] == "kept"


# ---------------------------------------------------------------- question sets and corpora


def test_quiz_question_sets_parts_flags_and_strict_known(client, engine, lock):
    full = ok(client.get("/api/questions", params={"set": "quiz:retain", "limit": 500}))
    kept = ok(client.get("/api/questions", params={"set": "quiz:retain!overlaps_bio", "limit": 500}))
    flagged = [q for q in full["questions"] if q["extra"].get("overlaps_bio")]
    assert flagged and kept["total"] == full["total"] - len(flagged)
    assert not any(q["extra"].get("overlaps_bio") for q in kept["questions"])
    train = ok(client.get("/api/questions", params={"set": "quiz:bio@train", "limit": 1}))["total"]
    held = ok(client.get("/api/questions", params={"set": "quiz:bio@heldout", "limit": 1}))["total"]
    assert train + held == ok(client.get("/api/questions", params={"set": "quiz:bio", "limit": 1}))["total"]
    page = ok(client.get("/api/questions", params={"set": GEO, "limit": 6, "known": "true", "strict": "true"}))
    assert page["known"] is True and page["strict"] is True
    qs = load_questions(GEO, 6)
    with lock:
        want = M.known_questions(engine, qs, strict=True)
    assert [q["id"] for q in page["questions"]] == [q.id for q in want]
    plain = ok(client.get("/api/questions", params={"set": GEO, "limit": 2}))
    assert plain["strict"] is False and plain["questions"][0]["extra"] is None  # MMLU has no extra fields


def load_questions(spec: str, n: int) -> list:
    from unlearn_core.data import loaders as D

    return D.load_question_set(spec).questions[:n]


def test_quiz_corpora(client):
    d = ok(
        client.post(
            "/api/features/dashboard",
            json={
                "feature": 2,
                "corpora": ["webtext", "quiz:bio@train"],
                "n_tokens": 300,
                "k": 2,
                "neuronpedia": False,
            },
        )
    )
    assert set(d["corpora"]) == {"webtext", "quiz:bio@train"}
    assert "quiz:bio" in ok(client.get("/api/info"))["corpora"]
    r = client.post("/api/features/dashboard", json={"feature": 2, "corpora": ["wmdp-bio-forget"], "n_tokens": 300})
    assert r.status_code == 404 and "wmdp-bio-forget" in r.json()["detail"]  # accepted name, gated data absent


BAD = [
    ("select unknown target", "post", "/api/targets/select", {"target": "nope"}, 404),
    ("select no target", "post", "/api/targets/select", {}, 422),
    ("select zero threshold", "post", "/api/targets/select", {"target": "bio-basics", "threshold": 0}, 422),
    ("select zero n", "post", "/api/targets/select", {"target": "bio-basics", "n": 0}, 422),
    ("select unknown sae", "post", "/api/targets/select", {"target": "bio-basics", "sae": "nope"}, 404),
    ("select unknown field", "post", "/api/targets/select", {"target": "bio-basics", "tokens": 5}, 422),
    ("demo unknown target", "post", "/api/demo", {"target": "nope"}, 404),
    ("demo max_scan 0", "post", "/api/demo", {"target": "bio-basics", "max_scan": 0}, 422),
    ("demo huge max_scan", "post", "/api/demo", {"target": "bio-basics", "max_scan": 10**6}, 422),
    ("unknown quiz", "get", "/api/questions?set=quiz:trivia", None, 404),
    ("question file path", "get", "/api/questions?set=/etc/passwd.json", None, 404),
    ("question file: prefix", "get", "/api/questions?set=file:/tmp/x.csv", None, 404),
    ("bad flag", "get", "/api/questions?set=quiz:retain!a-b", None, 400),
    ("unknown quiz corpus", "post", "/api/features/dashboard", {"feature": 1, "corpora": ["quiz:nope"]}, 400),
    ("job unknown target", "post", "/api/jobs", {"target": "nope", "question_limit": 1}, 404),
    ("job file forget set", "post", "/api/jobs", {"target": "bio-basics", "forget_set": "/etc/x.json"}, 404),
    ("job too many retain corpora", "post", "/api/jobs", {"retain_corpora": ["webtext"] * 5}, 422),
    ("job file retain corpus", "post", "/api/jobs", {"target": "bio-basics", "retain_corpora": ["/etc/passwd"]}, 400),
]


@pytest.mark.parametrize("name,method,path,body,status", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_with_a_message(client, name, method, path, body, status):
    r = client.request(method, path, json=body)
    assert r.status_code == status, (name, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail


# ---------------------------------------------------------------- jobs


def job(**kw) -> dict:
    return {
        "thresholds": [1.0],
        "ns": [2],
        "values": [50.0],
        "known": False,
        "question_limit": 2,
        "selection_tokens": 600,
        "loss_tokens": 100,
        **kw,
    }


def test_job_takes_its_settings_from_the_target(client, engine, lock):
    created = ok(client.post("/api/jobs", json=job(target="bio-basics")), 201)
    j = wait_job(client, created["id"])
    assert j["status"] == "done", j
    s = j["spec"]
    assert s["target"] == "bio-basics" and s["forget_corpus"] == "quiz:bio@train"
    assert s["retain_corpora"] == list(T.get_target("bio-basics").retain_corpora)
    assert s["forget_set"] == "quiz:bio@heldout"  # the target's eval part, which selection did not see
    sides = [T.with_part(q, "heldout") for q in T.get_target("bio-basics").retain_questions]
    assert s["side_effect_sets"] == sides and sides[:2] == ["quiz:retain@heldout!overlaps_bio", "quiz:retain@heldout"]
    assert s["strict_known"] is True and s["loss_corpus"] == "webtext"
    assert s["selection_tokens"] == 600  # given explicitly: the request wins
    rows = {r["config"]: r for r in j["results"]}
    assert set(rows) == {"none", "t=1|n=2|c=50"} and all(set(r) == JOB_KEYS for r in rows.values())
    assert rows["none"]["n_questions"] == {"forget": 2, **{q: 2 for q in sides}}
    with lock:  # selection: the highest retain frequency over both retain corpora
        fs = F.feature_stats(engine, "tiny", "quiz:bio@train", n_tokens=600)
        rs = [F.feature_stats(engine, "tiny", c, n_tokens=600) for c in s["retain_corpora"]]
    want = [r["feature"] for r in F.select_features(fs.freq, T.retain_frequency(rs), 1.0, 2)]
    assert rows["t=1|n=2|c=50"]["features"] == want


def test_job_explicit_fields_win_over_the_target(client):
    created = ok(
        client.post(
            "/api/jobs",
            json=job(
                target="sherlock",
                forget_set=GEO,
                side_effect_sets=[GEO],
                strict_known=False,
                retain_corpus="pile",
                loss_tokens=0,
            ),
        ),
        201,
    )
    j = wait_job(client, created["id"])
    s = j["spec"]
    assert j["status"] == "done", j
    assert s["forget_set"] == GEO and s["side_effect_sets"] == [GEO] and s["strict_known"] is False
    assert s["retain_corpora"] == ["pile"] and s["forget_corpus"] == "sherlock@train"
    plain = wait_job(
        client, ok(client.post("/api/jobs", json=job(forget_set=GEO, side_effect_sets=[], loss_tokens=0)), 201)["id"]
    )
    assert plain["spec"]["target"] is None and plain["spec"]["retain_corpora"] == ["wikitext@train"]
    assert plain["spec"]["strict_known"] is False


def test_a_job_stored_before_targets_still_resumes(engine, tmp_path):
    """A spec.json without target / retain_corpora / strict_known (written by the previous
    version), unfinished: the new server resumes it with one retain corpus and the plain filter."""
    other = dataclasses.replace(engine, settings=dataclasses.replace(engine.settings, cache_dir=str(tmp_path)))
    old = {
        "sae": "tiny",
        "forget_corpus": "wmdp-bio-text@train",
        "retain_corpus": "wikitext@train",
        "selection_tokens": 600,
        "thresholds": [1.0],
        "ns": [1],
        "values": [20.0, 50.0],
        "mode": "clamp",
        "forget_set": GEO,
        "side_effect_sets": [],
        "known": False,
        "question_limit": 2,
        "loss_corpus": "webtext",
        "loss_tokens": 0,
        "delay_per_config": 0.0,
    }
    folder = tmp_path / "jobs" / "old-job"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(
        json.dumps({"id": "old-job", "spec": old, "namespace": engine.cache_namespace(), "created": time.time()})
    )
    (folder / "results.jsonl").write_text(
        json.dumps(
            {
                "config": "none",
                "threshold": None,
                "n": None,
                "value": None,
                "mode": None,
                "features": [],
                "forget_accuracy": 0.5,
                "side_effect_accuracy": {},
                "side_effect_mean": None,
                "loss_added": None,
                "n_questions": {"forget": 2},
                "seconds": 0.0,
                "note": None,
            }
        )
        + "\n"
    )
    with _serving(other) as c:
        j = wait_job(c, "old-job")
    assert j["status"] == "done" and j["done"] == j["total"] == 3, j
    assert [r["config"] for r in j["results"]] == ["none", "t=1|n=1|c=20", "t=1|n=1|c=50"]
    assert j["results"][0]["forget_accuracy"] == 0.5  # the stored baseline was kept, not recomputed


# ---------------------------------------------------------------- a user's targets file


def _target_toml(name: str, forget_corpus: str, forget_questions: str, extra: str = "") -> str:
    """One target's TOML table, retaining WikiText and the retain quiz; ``extra`` adds fields or tables."""
    return (
        f'[{name}]\ndescription = "a test target"\nforget_corpus = "{forget_corpus}"\n'
        f'forget_questions = "{forget_questions}"\nretain_corpora = ["wikitext@train"]\n'
        f'retain_questions = ["quiz:retain"]\n{extra}'
    )


def _with_targets_file(engine, tmp_path):
    """The engine with ``tmp_path/t.toml`` as its targets file and a cache of its own."""
    settings = dataclasses.replace(
        engine.settings, cache_dir=str(tmp_path / "cache"), targets_file=str(tmp_path / "t.toml")
    )
    return dataclasses.replace(engine, settings=settings)


def test_the_server_reads_only_the_files_its_own_targets_name(engine, tmp_path):
    qs = [{"question": f"Q{i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4, "topic": "t"} for i in range(4)]
    (tmp_path / "mine.json").write_text(json.dumps(qs))
    (tmp_path / "other.json").write_text(json.dumps(qs))
    (tmp_path / "mine.txt").write_text("Some forget text about my topic, repeated. " * 40)
    (tmp_path / "t.toml").write_text(_target_toml("mine", "mine.txt", "mine.json"))
    other = _with_targets_file(engine, tmp_path)
    with _serving(other) as c:
        mine = next(t for t in ok(c.get("/api/targets"))["targets"] if t["name"] == "mine")
        assert mine["source"].endswith("t.toml") and mine["forget_questions"] == str(tmp_path / "mine.json")
        assert mine["forget_questions"] in [s["name"] for s in ok(c.get("/api/info"))["question_sets"]]
        assert ok(c.get("/api/questions", params={"set": mine["forget_questions"]}))["total"] == 4
        assert c.get("/api/questions", params={"set": str(tmp_path / "other.json")}).status_code == 404
        body = {"feature": 1, "n_tokens": 100, "k": 1, "neuronpedia": False}
        assert c.post("/api/features/dashboard", json={**body, "corpora": [mine["forget_corpus"]]}).status_code == 200
        r = c.post("/api/features/dashboard", json={**body, "corpora": [str(tmp_path / "t.toml")]})
        assert r.status_code == 400
        sel = answer(c, "/api/targets/select", {"target": "mine", "n": 3})
        assert sel["forget_corpus"] == str(tmp_path / "mine.txt") and len(sel["features"]) == 3


# ---------------------------------------------------------------- targets defined in the app (POST / DELETE)


def rows(n: int = 6, tag: str = "zeta", ids: bool = False) -> list[dict]:
    out = [
        {
            "question": f"Which {tag} item is number {i}?",
            "choices": [f"{tag} {i}", "b", "c", "d"],
            "answer": 0,
            "topic": tag,
        }
        for i in range(n)
    ]
    if ids:
        for i, r in enumerate(out):
            r["id"] = str(i + 1)
    return out


def docs(word: str = "zeta", n: int = 6) -> list[str]:
    return [
        f"Paragraph {i} about {word}: the {word} of {word} is a {word} thing, said {word} folk. " * 6 for i in range(n)
    ]


def new_target(name: str, **kw) -> dict:
    return {"name": name, "description": f"the {name} test target", "documents": docs(), "questions": rows(), **kw}


@pytest.fixture
def remove(client):
    """Names of targets a test defines; deleted afterwards even when the test fails."""
    names: list[str] = []
    yield names
    for n in names:
        client.delete(f"/api/targets/{n}")


def test_define_a_target_use_it_and_delete_it(client, engine, remove):
    remove.append("zeta")
    t = ok(client.post("/api/targets", json=new_target("zeta", n=7, c=350)), 201)
    folder = T.saved_targets_dir(engine.settings) / "zeta"
    assert t["name"] == "zeta" and t["defined_in_app"] is True and t["description"] == "the zeta test target"
    assert t["forget_corpus"] == str(folder / "corpus.jsonl")
    assert t["forget_questions"] == str(folder / "questions.json")
    assert t["retain_corpora"] == ["quiz:retain@train", "wikitext@train", "webtext-train"]  # the bio-basics ones
    assert t["retain_questions"] == ["quiz:retain"] and t["eval_part"] == "all"
    assert t["selection"]["n"] == 7 and t["intervention"] == {"mode": "clamp", "c": 350.0}
    assert t["resolved_forget_corpus"] == t["forget_corpus"] and t["forget_corpus_note"] == ""
    listed = {x["name"]: x for x in ok(client.get("/api/targets"))["targets"]}
    assert listed["zeta"] == t  # the response is the target as GET /api/targets lists it
    assert t["forget_questions"] in [s["name"] for s in ok(client.get("/api/info"))["question_sets"]]
    page = ok(client.get("/api/questions", params={"set": t["forget_questions"], "limit": 50}))
    assert page["total"] == 6 and page["questions"][1]["question"] == "Which zeta item is number 1?"
    assert page["questions"][1]["extra"]["topic"] == "zeta"
    sel = answer(client, "/api/targets/select", {"target": "zeta"})
    assert sel["forget_corpus"] == t["forget_corpus"] and len(sel["features"]) == 7
    demo = ok(client.post("/api/demo", json={"target": "zeta", "max_scan": 2}))
    assert demo["intervention"]["c"] == 350.0 and demo["n_checked_forget"] == 2
    body = {"feature": 1, "n_tokens": 100, "k": 1, "neuronpedia": False}
    assert client.post("/api/features/dashboard", json={**body, "corpora": [t["forget_corpus"]]}).status_code == 200
    # only the files the target names are readable, not the rest of its folder
    r = client.post("/api/features/dashboard", json={**body, "corpora": [str(folder / "target.toml")]})
    assert r.status_code == 400
    assert client.get("/api/questions", params={"set": str(folder / "other.json")}).status_code == 404

    gone = ok(client.delete("/api/targets/zeta"))
    assert gone == {"deleted": "zeta"} and not folder.exists()
    assert "zeta" not in {x["name"] for x in ok(client.get("/api/targets"))["targets"]}
    assert client.get("/api/questions", params={"set": t["forget_questions"]}).status_code == 404
    assert client.delete("/api/targets/zeta").status_code == 404


def test_a_target_defined_again_gets_fresh_questions_and_statistics(client, remove):
    """Same name, other files: nothing cached under the old target's paths is served (questions,
    feature statistics, known-question ids)."""
    remove.append("again")
    first = ok(client.post("/api/targets", json=new_target("again", questions=rows(4, "alpha", ids=True))), 201)
    q1 = ok(client.get("/api/questions", params={"set": first["forget_questions"]}))["questions"]
    s1 = answer(client, "/api/targets/select", {"target": "again", "n": 5})["features"]
    ok(client.delete("/api/targets/again"))
    second = ok(
        client.post(
            "/api/targets",
            json=new_target(
                "again",
                documents=["Totally different words here; numbers 1 2 3 and more. " * 40],
                questions=rows(3, "beta", ids=True),
            ),
        ),
        201,
    )
    assert second["forget_questions"] == first["forget_questions"]  # the same path...
    q2 = ok(client.get("/api/questions", params={"set": second["forget_questions"]}))["questions"]
    assert len(q1) == 4 and len(q2) == 3 and "beta" in q2[0]["question"]  # ...but the new questions
    assert q1[0]["id"].startswith("questions:1-") and q2[0]["id"].startswith("questions:1-")
    assert q1[0]["id"] != q2[0]["id"]  # the row's own id, plus a digest of its content
    s2 = answer(client, "/api/targets/select", {"target": "again", "n": 5})["features"]
    assert [r["forget_freq"] for r in s1] != [r["forget_freq"] for r in s2]  # statistics of the new corpus


def test_defining_a_target_rejects_bad_questions_paths_and_names(client, engine, remove):
    remove.append("ok-name")
    bad_rows = rows(4)
    bad_rows[2] = {"question": "Only two choices?", "choices": ["a", "b"], "answer": 0}
    r = client.post("/api/targets", json=new_target("ok-name", questions=bad_rows))
    assert r.status_code == 400 and r.json()["detail"] == "questions, question 3: expected 4 choices, got 2"
    no_answer = rows(2) + [{"question": "Q?", "choices": ["a", "b", "c", "d"]}]
    r = client.post("/api/targets", json=new_target("ok-name", questions=no_answer))
    assert r.status_code == 400 and "question 3: missing 'answer'" in r.json()["detail"]
    assert str(engine.settings.cache_dir) not in r.json()["detail"]  # no server folders in the message
    saved = T.saved_targets_dir(engine.settings)
    assert not (saved / "ok-name").exists() and not list(saved.glob(".*.tmp"))  # nothing left behind
    ok(client.post("/api/targets", json=new_target("ok-name")), 201)
    r = client.post("/api/targets", json=new_target("ok-name"))
    assert r.status_code == 409 and "exists already" in r.json()["detail"]
    r = client.post("/api/targets", json=new_target("bio-basics"))
    assert r.status_code == 409 and "built-in" in r.json()["detail"]
    r = client.delete("/api/targets/bio-basics")
    assert r.status_code == 403 and "built-in" in r.json()["detail"]
    assert "bio-basics" in {x["name"] for x in ok(client.get("/api/targets"))["targets"]}


BAD_TARGETS = [
    ("file retain questions", {"retain_questions": ["/etc/x.json"]}, 400, "file paths are not accepted"),
    ("file: retain questions", {"retain_questions": ["file:/tmp/x.csv"]}, 400, "file paths are not accepted"),
    ("relative retain questions", {"retain_questions": ["mine.csv@train"]}, 400, "file paths are not accepted"),
    ("unknown quiz retain questions", {"retain_questions": ["quiz:nope"]}, 400, "no quiz 'nope'"),
    ("unknown retain set", {"retain_questions": ["trivia"]}, 400, "unknown question set"),
    ("unknown mmlu subject", {"retain_questions": ["mmlu:nope"]}, 400, "unknown MMLU subject"),
    ("bad flag", {"retain_questions": ["quiz:retain!a-b"]}, 400, "invalid filter flag"),
    ("file retain corpus", {"retain_corpora": ["/etc/passwd"]}, 400, "file paths are not accepted"),
    ("txt retain corpus", {"retain_corpora": ["notes.txt"]}, 400, "file paths are not accepted"),
    ("mmlu path retain corpus", {"retain_corpora": ["mmlu:../../x.jsonl"]}, 400, "file paths are not accepted"),
    ("unknown retain corpus", {"retain_corpora": ["nope"]}, 400, "unknown corpus"),
    ("bad corpus part", {"retain_corpora": ["wikitext@test"]}, 400, "corpus part"),
    ("empty documents", {"documents": ["  ", "\n"]}, 400, "the forget corpus is empty"),
    ("upper-case name", {"name": "Zeta"}, 422, "name"),
    ("name with a slash", {"name": "a/b"}, 422, "name"),
    ("name too long", {"name": "a" * 41}, 422, "name"),
    ("no documents", {"documents": []}, 422, "documents"),
    ("no questions", {"questions": []}, 422, "questions"),
    ("too many questions", {"questions": [{"question": "q"}] * 5001}, 422, "questions"),
    ("too much text", {"documents": ["x" * 2_500_001, "y" * 2_500_000]}, 422, "at most 5,000,000"),
    ("a question that is not an object", {"questions": ["what?"]}, 422, "questions"),
    ("unknown mode", {"mode": "erase"}, 422, "mode"),
    ("huge c", {"c": 1e9}, 422, "c"),
    ("zero threshold", {"threshold": 0}, 422, "threshold"),
    ("unknown field", {"forget_corpus": "/etc/passwd"}, 422, "forget_corpus"),
]


@pytest.mark.parametrize("name,change,status,words", BAD_TARGETS, ids=[b[0] for b in BAD_TARGETS])
def test_bad_target_definitions_are_4xx_with_a_message(client, engine, name, change, status, words):
    r = client.post("/api/targets", json={**new_target("bad-one"), **change})
    assert r.status_code == status, (name, r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail and "Traceback" not in detail
    assert not (T.saved_targets_dir(engine.settings) / "bad-one").exists()
    assert len(r.text) < 5000  # the input is not echoed back


def test_saved_targets_file_names_cannot_reach_other_files(client, engine, remove):
    """A saved target trusts exactly its own corpus and questions: its retain specs are names."""
    from unlearn_core.server.access import trusted_files

    remove.append("tidy")
    t = ok(
        client.post(
            "/api/targets",
            json=new_target(
                "tidy",
                retain_corpora=["wikitext@train", "quiz:bio@train"],
                retain_questions=["quiz:retain!overlaps_bio", GEO],
            ),
        ),
        201,
    )
    sets, corpora = trusted_files(engine)
    folder = str(T.saved_targets_dir(engine.settings))
    assert {x for x in sets if x.startswith(folder)} == {t["forget_questions"]}
    assert {x for x in corpora if x.startswith(folder)} == {t["forget_corpus"]}
    assert t["retain_questions"] == ["quiz:retain!overlaps_bio", GEO]


def test_an_unfinished_save_is_removed_not_served(engine, tmp_path):
    """A server stopped mid-save leaves ``.<name>.tmp/``: the loader never offers it, and the next
    server removes it at startup."""
    other = dataclasses.replace(engine, settings=dataclasses.replace(engine.settings, cache_dir=str(tmp_path)))
    ghost = T.saved_targets_dir(other.settings) / ".ghost.tmp"
    ghost.mkdir(parents=True)
    (ghost / "target.toml").write_text(
        '[ghost]\nforget_corpus = "corpus.jsonl"\nforget_questions = "q.json"\n'
        'retain_corpora = ["wikitext"]\nretain_questions = ["quiz:retain"]\n'
    )
    assert "ghost" not in T.engine_targets(other)  # the loader skips unfinished saves
    with _serving(other) as c:
        end = time.time() + 30
        while ghost.exists():  # the startup hook runs right after the model is ready
            assert time.time() < end, "the unfinished save was not removed"
            time.sleep(0.05)
        assert "ghost" not in {t["name"] for t in ok(c.get("/api/targets"))["targets"]}


def test_a_description_with_emoji_is_saved_as_given(client, remove):
    remove.append("emoji")
    t = ok(client.post("/api/targets", json=new_target("emoji", description="dragons 🐉 «lore»")), 201)
    assert t["description"] == "dragons 🐉 «lore»"
    assert (
        next(x for x in ok(client.get("/api/targets"))["targets"] if x["name"] == "emoji")["description"]
        == "dragons 🐉 «lore»"
    )


def test_target_select_with_the_search_method_matches_the_engine(engine, lock, tmp_path):
    """A target whose selection is a search: the server returns the engine's rows (no threshold, the
    query token and specificity per feature) and the target list carries the method and query."""
    search = '[holmes.selection]\nmethod = "search"\nquery = "Sherlock Holmes"\nn = 4\n'
    (tmp_path / "t.toml").write_text(_target_toml("holmes", "sherlock@train", "quiz:sherlock", search))
    other = _with_targets_file(engine, tmp_path)
    with _serving(other) as c:
        listed = next(t for t in ok(c.get("/api/targets"))["targets"] if t["name"] == "holmes")
        assert listed["selection"]["method"] == "search" and listed["selection"]["query"] == "Sherlock Holmes"
        r = answer(c, "/api/targets/select", {"target": "holmes"})
        with lock:
            ref = T.select_for_target(other, T.load_targets(str(tmp_path / "t.toml"))["holmes"], "tiny")
        assert r["method"] == "search" and r["threshold"] is None and r["background"] == "webtext-train"
        assert [x["feature"] for x in r["features"]] == [x["feature"] for x in ref["features"]]
        assert 0 < len(r["features"]) <= 4 and all(x["top_token"] and x["score"] > 0 for x in r["features"])
        by_freq = answer(c, "/api/targets/select", {"target": "holmes", "threshold": 0.99})
        assert by_freq["method"] == "frequency" and by_freq["threshold"] == 0.99
