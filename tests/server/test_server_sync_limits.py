"""The synchronous limits of the known filter, the guided demo and the feature statistics (tiny
backend, over HTTP): past each, a 409/400 that names the task route; the task answers what the
synchronous endpoint answers (it computed, the endpoint reads its cache, and the other way
round), with progress totals in questions (known filter) or steps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from api_helpers import app, client, lock, ok, run_task, wait_done  # noqa: F401 (fixtures)

from unlearn_core.data import loaders as D
from unlearn_core.evaluation import mcq as M
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.server import schemas as S
from unlearn_core.server.steps import fits_context

GEO = "mmlu:high_school_geography"  # short questions: fit the tiny model's 512-token context


@pytest.fixture(scope="module")
def engine(tmp_path_factory, shared_data):
    e = tiny_engine(cache_dir=str(tmp_path_factory.mktemp("sync_limits_cache")))
    e.settings.scoring = "cloze"  # the embedded model's: the random tiny model then knows some questions
    return e


def known_files(engine) -> set[Path]:
    return set((Path(engine.settings.cache_dir) / "known").glob("*.json"))


def says_task(r, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert f"POST /api/tasks/{kind}" in detail and "GET /api/tasks/{id}" in detail, detail
    return detail


def submit(client, kind: str, body: dict) -> dict:
    """A task run to its end: its final state (result, done, total)."""
    task = ok(client.post(f"/api/tasks/{kind}", json=body), 202)
    done = wait_done(client, f"/api/tasks/{task['id']}", 900)  # generous: a busy machine is no failure
    assert done["status"] == "done", done
    return done


def test_the_limits_are_published(client):
    limits = ok(client.get("/api/info"))["limits"]
    assert (limits["sync_known_questions"], limits["sync_demo_scan"], limits["sync_stats_tokens"]) == (
        S.SYNC_KNOWN_QUESTIONS,
        S.SYNC_DEMO_SCAN,
        S.SYNC_STATS_TOKENS,
    )


# ---------------------------------------------------------------- the known filter


def test_a_known_page_past_the_limit_is_a_409_that_computes_nothing(client, engine):
    before = known_files(engine)
    r = client.get("/api/questions", params={"set": GEO, "known": "true", "limit": S.SYNC_KNOWN_QUESTIONS + 1})
    detail = says_task(r, 409, "questions_known")
    assert f"check {S.SYNC_KNOWN_QUESTIONS + 1} questions" in detail
    assert known_files(engine) == before  # refused before any question was checked
    page = ok(client.get("/api/questions", params={"set": GEO, "known": "true", "limit": S.SYNC_KNOWN_QUESTIONS}))
    assert page["known"] is True and len(known_files(engine)) == len(before) + 1  # within: checked synchronously


def reference_ids(engine, lock, offset: int, limit: int, strict: bool = False) -> tuple[list[str], int]:
    """The known questions of the page by the engine itself (no cache), and how many were too long."""
    page = D.load_question_set(GEO, engine.settings.data_dir).questions[offset : offset + limit]
    with lock:
        fit = [q for q in page if fits_context(engine, q)]
        known = M.known_questions(engine, fit, strict=strict, use_cache=False)
    return [q.id for q in known], len(page) - len(fit)


def test_the_known_task_answers_what_the_page_answers(client, engine, lock):
    body = {"set": GEO, "limit": 40, "offset": 100}  # 40 unchecked questions: a task
    params = {**body, "known": "true"}
    says_task(client.get("/api/questions", params=params), 409, "questions_known")
    task = submit(client, "questions_known", body)
    assert task["done"] == task["total"] == 40  # progress in questions
    page = ok(client.get("/api/questions", params=params))  # now cached: synchronous
    assert task["result"] == page
    ids, too_long = reference_ids(engine, lock, 100, 40)
    assert [q["id"] for q in page["questions"]] == ids and page["n_skipped_too_long"] == too_long
    assert 0 < len(ids) < 40  # a meaningful comparison: some known, some not
    # the other way round: checked synchronously (within the limit), then read by the task
    strict = {"set": GEO, "limit": S.SYNC_KNOWN_QUESTIONS, "offset": 150, "strict": True}
    sync = ok(client.get("/api/questions", params={**strict, "known": "true", "strict": "true"}))
    assert run_task(client, "/api/questions", strict) == sync
    assert [q["id"] for q in sync["questions"]] == reference_ids(engine, lock, 150, S.SYNC_KNOWN_QUESTIONS, True)[0]


@pytest.fixture
def slow_scoring(monkeypatch):
    """The real scores, slower: each scored batch takes 50 ms more (the task runs long enough to watch)."""
    real = M.score_questions

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(M, "score_questions", slow)


def test_the_known_task_counts_questions_as_it_goes(client, slow_scoring):
    body = {"set": GEO, "limit": 24, "offset": 160}
    task = ok(client.post("/api/tasks/questions_known", json=body), 202)
    seen = []
    end = time.time() + 120
    while (j := ok(client.get(f"/api/tasks/{task['id']}")))["status"] != "done":
        assert j["status"] in ("queued", "running") and time.time() < end, j
        if j["status"] == "running":
            seen.append((j["done"], j["total"]))
        time.sleep(0.05)
    assert j["done"] == j["total"] == 24
    assert seen and all(total == 24 and 0 <= done <= 24 for done, total in seen), seen
    assert any(0 < done < 24 for done, _ in seen), seen  # counted question by question
    again = submit(client, "questions_known", body)  # all cached now: the same count, read at once
    assert again["done"] == again["total"] == 24 and again["result"] == j["result"]


# ---------------------------------------------------------------- the guided demo


def test_the_demo_past_its_limits_names_the_task_and_the_task_answers_the_same(client):
    small = {"target": "bio-basics", "max_scan": S.SYNC_DEMO_SCAN}
    detail = says_task(client.post("/api/demo", json=small), 409, "demo")  # the selection's statistics: not cached
    assert "neither cached nor shipped" in detail
    first = submit(client, "demo", small)
    assert first["done"] == first["total"] > 2 * S.SYNC_DEMO_SCAN  # statistics batches, then the questions
    sync = ok(client.post("/api/demo", json=small))  # the statistics are cached now
    assert first["result"] == sync and sync["n_checked_forget"] <= S.SYNC_DEMO_SCAN
    r = client.post("/api/demo", json={"target": "bio-basics"})  # the default scan of 60
    assert f"max_scan {S.DemoRequest.model_fields['max_scan'].default}" in says_task(r, 400, "demo")
    assert client.post("/api/demo", json={"target": "nope"}).status_code == 404  # an unknown target first


def test_the_demo_task_counts_one_step_per_question(client, engine):
    """Each question one step: the scanned ones of each set (checked or passed over) and, for the
    default's question-based selection (its scores cached), the train-half questions it reads,
    each checked to fit the context."""
    from unlearn_core.evaluation import target_scores as TS
    from unlearn_core.evaluation.targets import QUESTION_METHODS, get_target

    body = {"target": "bio-basics", "max_scan": S.SYNC_DEMO_SCAN}
    ok(client.post("/api/demo", json=body))  # the statistics and scores cached (no steps of theirs below)
    t = get_target("bio-basics")
    read = sum(map(len, TS.train_question_sets(engine, t))) if t.selection.method in QUESTION_METHODS else 0
    task = submit(client, "demo", body)
    assert task["done"] == task["total"] == 2 * S.SYNC_DEMO_SCAN + read
    assert task["result"] == ok(client.post("/api/demo", json=body))


# ---------------------------------------------------------------- feature statistics

OVER = S.SYNC_STATS_TOKENS + 1_000
CASES = {
    "features_dashboard": (
        "/api/features/dashboard",
        lambda n: {"feature": 2, "corpora": ["wikitext", "webtext"], "n_tokens": n, "k": 2, "neuronpedia": False},
    ),
    "features_select": (
        "/api/features/select",
        lambda n: {"forget": "sherlock@train", "retain": "webtext", "threshold": 0.5, "n": 3, "n_tokens": n},
    ),
    "features_search": (
        "/api/features/search",
        lambda n: {"text": "hello there", "k": 3, "background": "wikitext@train", "background_tokens": n},
    ),
}


def same(a: dict, b: dict) -> bool:
    a, b = dict(a), dict(b)
    a.pop("cached", None), b.pop("cached", None)  # the activation LRU: the second call hits it
    return a == b


@pytest.mark.parametrize("kind", sorted(CASES))
def test_statistics_past_the_limit_are_a_409_and_the_task_computes_them(client, kind):
    path, body = CASES[kind]
    over = body(OVER + len(kind))  # a size of its own: not cached by another test
    detail = says_task(client.post(path, json=over), 409, kind)
    assert "neither cached nor shipped" in detail and f"at most {S.SYNC_STATS_TOKENS:,}" in detail
    task = submit(client, kind, over)
    assert task["done"] == task["total"] >= -(-OVER // (16 * 128))  # at least one step per 16 windows
    assert same(task["result"], ok(client.post(path, json=over)))  # cached now: answered synchronously


@pytest.mark.parametrize("kind", sorted(CASES))
def test_statistics_within_the_limit_stay_synchronous(client, kind):
    path, body = CASES[kind]
    within = body(S.SYNC_STATS_TOKENS // 2 - len(kind))  # two corpora at most: within the limit together
    sync = ok(client.post(path, json=within))  # computed synchronously
    assert same(run_task(client, path, within), sync)


def test_descriptions_past_the_limit_are_a_409_and_the_task_writes_them(client):
    body = {"forget": "wikitext@train", "retain": "webtext", "threshold": 0.9, "n_tokens": 300, "describe": True}
    within = ok(client.post("/api/features/select", json={**body, "n": S.SYNC_DESCRIPTIONS}))
    assert len(within["features"]) == S.SYNC_DESCRIPTIONS and all(r["description"] for r in within["features"])
    more = {**body, "n": 2 * S.SYNC_DESCRIPTIONS}  # the first ones are cached now: as many again to describe
    assert ok(client.post("/api/features/select", json=more))["features"][: S.SYNC_DESCRIPTIONS] == within["features"]
    most = {**body, "n": 3 * S.SYNC_DESCRIPTIONS + 1}
    detail = says_task(client.post("/api/features/select", json=most), 409, "features_select")
    assert f"{S.SYNC_DESCRIPTIONS + 1} of the {most['n']} features have no cached description" in detail
    task = submit(client, "features_select", most)
    assert task["done"] == task["total"] == most["n"]  # one step per feature (a cached description: read at once)
    assert task["result"] == ok(client.post("/api/features/select", json=most))  # all cached now


def test_a_shipped_or_cached_statistic_costs_nothing(client, engine, app):
    """The check counts only what would be computed: a cached entry is free whatever its size."""
    from unlearn_core.server.sync_limits import stats_tokens_to_compute

    state = app.state.server
    body = CASES["features_search"][1](OVER)
    assert stats_tokens_to_compute(state, "tiny", [("wikitext@train", OVER)]) > S.SYNC_STATS_TOKENS
    submit(client, "features_search", body)
    assert stats_tokens_to_compute(state, "tiny", [("wikitext@train", OVER)]) == 0
    assert ok(client.post("/api/features/search", json=body))["features"]


def test_a_target_selection_past_the_limits_names_its_task_and_the_task_answers_the_same(client):
    """``POST /api/targets/select``: uncached statistics, then too many uncached descriptions, are
    409s naming ``targets_select``; the task computes them and the endpoint then answers the same."""
    target = ok(client.get("/api/targets"))["default"]
    # the frequency selection: the default's Fisher ranking finds only a few features on the tiny
    # model, fewer than the descriptions limit this test must cross
    plain = {"target": target, "n": 3 * S.SYNC_DESCRIPTIONS + 1, "method": "frequency"}
    r = client.post("/api/targets/select", json=plain)
    if r.status_code == 409:  # the target's statistics are not cached yet on this backend
        says_task(r, 409, "targets_select")
        assert submit(client, "targets_select", plain)["result"] == ok(client.post("/api/targets/select", json=plain))
    described = {**plain, "describe": True}
    detail = says_task(client.post("/api/targets/select", json=described), 409, "targets_select")
    assert "have no cached description" in detail
    task = submit(client, "targets_select", described)
    rows = task["result"]["features"]
    assert len(rows) == plain["n"] and all(row["description"] for row in rows)
    assert task["result"] == ok(client.post("/api/targets/select", json=described))  # cached now: synchronous
