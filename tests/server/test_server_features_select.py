"""The question-based selections (attribution, DSG's fisher) over HTTP, on the tiny backend scoring by
cloze: /api/targets/select and /api/features/select give the engine's rows, scores and the questions
they read; bad methods are 4xx."""

from __future__ import annotations

import dataclasses

import pytest
from api_helpers import answer, ok, wait_ok
from fastapi.testclient import TestClient

from unlearn_core.evaluation import target_scores as TS
from unlearn_core.evaluation import targets as T
from unlearn_core.features import attribution as A
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.server import create_app

TOML = (
    '[bio-small]\ndescription = "bio-basics with small corpora"\nforget_corpus = "quiz:bio@train"\n'
    'forget_questions = "quiz:bio"\nretain_corpora = ["wikitext@train"]\nretain_questions = ["quiz:retain"]\n'
    'strict_known = false\n[bio-small.selection]\nmethod = "attribution"\nn = 4\ntokens = 1000\n'
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("select_server")
    (folder / "t.toml").write_text(TOML)
    engine = tiny_engine(cache_dir=str(folder / "cache"))
    engine.settings = dataclasses.replace(engine.settings, scoring="cloze", targets_file=str(folder / "t.toml"))
    app = create_app(lambda: engine, token="")
    with TestClient(app) as c:
        wait_ok(c)
        yield c, engine, app.state.server.lock


@pytest.mark.parametrize("method", ["attribution", "fisher"])
def test_target_select_by_a_question_method_matches_the_engine(served, method):
    c, engine, lock = served
    r = answer(c, "/api/targets/select", {"target": "bio-small", "method": method})
    with lock:  # the engine's one-pass computation, not read from the cache the server wrote
        t = T.get_target("bio-small", engine.settings.targets_file)
        fk, rk = TS.known_train_questions(engine, t, *TS.train_question_sets(engine, t))
        fresh = A.compute_scores(engine, "tiny", method, fk, rk, "cloze", engine.prompt_format)
        ref = T.select_for_target(engine, t, "tiny", method=method, scores=(fresh, (fk, rk)))
    assert r["method"] == method and r["threshold"] is None and r["scoring"] == "cloze"
    assert r["forget_questions"] == "quiz:bio@train" and r["retain_questions"] == ["quiz:retain@train"]
    assert (r["n_forget_questions"], r["n_retain_questions"]) == (ref["n_forget_questions"], ref["n_retain_questions"])
    assert [x["feature"] for x in r["features"]] == [x["feature"] for x in ref["features"]] and r["features"]
    for row, want in zip(r["features"], ref["features"]):
        assert row["score"] == pytest.approx(want["score"], rel=1e-6)
        assert row["forget_freq"] == pytest.approx(want["forget_freq"], abs=1e-6)
        assert set(row["retain_freqs"]) == {"wikitext@train"}
    fs = answer(c, "/api/features/select", {"target": "bio-small", "method": method, "n": 4})
    assert fs["method"] == method and fs["target"] == "bio-small" and fs["threshold"] is None
    assert fs["forget"] == "quiz:bio@train" and fs["retain"] == "wikitext@train"
    assert [x["feature"] for x in fs["features"]] == [x["feature"] for x in r["features"]]
    assert [x["score"] for x in fs["features"]] == pytest.approx([x["score"] for x in r["features"]])


def test_the_targets_own_method_and_a_threshold(served):
    c, _, _ = served
    own = answer(c, "/api/targets/select", {"target": "bio-small"})
    assert own["method"] == "attribution" and all(x["score"] > 0 for x in own["features"])
    by_freq = answer(c, "/api/targets/select", {"target": "bio-small", "threshold": 1.0})
    assert by_freq["method"] == "frequency" and by_freq["threshold"] == 1.0
    assert all(x.get("score") is None for x in by_freq["features"])


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/features/select", {"method": "attribution"}),  # no target
        ("/api/features/select", {"method": "gradient", "target": "bio-small"}),
        ("/api/targets/select", {"target": "bio-small", "method": "gradient"}),
    ],
)
def test_bad_methods_are_4xx(served, path, body):
    c, _, _ = served
    r = c.post(path, json=body)
    assert r.status_code == 422, r.text


def test_uncached_question_scores_are_a_409_naming_the_task_then_synchronous(tmp_path, shared_data):
    """A fresh server: the known filter of the train half (then the scores) is more than a synchronous
    request computes: a 409 naming the task; the task's answer is then served synchronously."""
    (tmp_path / "t.toml").write_text(TOML)
    engine = tiny_engine(cache_dir=str(tmp_path / "cache"))
    engine.settings = dataclasses.replace(engine.settings, scoring="cloze", targets_file=str(tmp_path / "t.toml"))
    with TestClient(create_app(lambda: engine, token="")) as c:
        wait_ok(c)
        cases = (
            ("/api/targets/select", "targets_select", "fisher"),
            ("/api/features/select", "features_select", "attribution"),
        )
        for path, kind, method in cases:  # a method each: the first one's scores are cached afterwards
            body = {"target": "bio-small", "method": method}
            r = c.post(path, json=body)
            assert r.status_code == 409 and f"POST /api/tasks/{kind}" in r.json()["detail"], r.text
            via_task = answer(c, path, body)
            assert ok(c.post(path, json=body)) == via_task  # cached now: answered synchronously
