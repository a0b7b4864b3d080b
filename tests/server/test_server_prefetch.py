"""Slider neighbours scored ahead (server/prefetch.py), on the tiny backend: the next value is
served from memory, and what is served equals an independent single-value computation."""

from __future__ import annotations

import pytest
from api_helpers import app, client, engine, lock, ok  # noqa: F401 (fixtures)

from unlearn_core.evaluation import mcq as M
from unlearn_core.method.interventions import Intervention
from unlearn_core.server import prefetch as PF

IV = {"sae": "tiny", "features": [2, 5, 7], "value": 0.0, "mode": "clamp"}


def test_a_slider_step_scores_its_neighbours_and_serves_them_exactly(client, app, engine, lock):
    srv = app.state.server
    qid = ok(client.get("/api/questions", params={"set": "wmdp-bio", "limit": 2}))["questions"][1]["id"]
    body = lambda v: {"question_id": qid, "set": "wmdp-bio", "interventions": [IV], "values": [v]}  # noqa: E731
    done0 = srv.prefetcher.done
    ok(client.post("/api/mcq", json=body(40.0)))
    assert srv.prefetcher.idle.wait(60)
    assert srv.prefetcher.done - done0 == 2  # 41, 39
    key = PF.curve_key(
        "wmdp-bio",
        srv.find_question("wmdp-bio", qid)[1],
        engine.scoring,
        engine.prompt_format,
        [Intervention("tiny", (2, 5, 7), 0.0, "clamp")],
    )
    assert all(srv.scores.has(key, v) for v in (39.0, 41.0))
    hits0 = srv.scores.hits
    r = ok(client.post("/api/mcq", json=body(41.0)))
    assert srv.scores.hits == hits0 + 1  # served from memory
    _, q = srv.find_question("wmdp-bio", qid)
    with lock:  # independent: one value at a time, the straightforward engine path
        ref = M.score_question(engine, q, [Intervention("tiny", (2, 5, 7), 41.0, "clamp")])
    assert r["curve"][0]["score"]["probs"] == pytest.approx(ref.probs, abs=1e-5)
    assert r["curve"][0]["score"]["predicted"] == ref.predicted


def test_curve_requests_do_not_prefetch_and_the_lru_is_bounded():
    lru = PF.ScoreLRU(capacity=3)
    for v in range(5):
        lru.put(("k",), v, v * 10)
    assert not lru.has(("k",), 0) and lru.get(("k",), 4) == 40
    assert PF.neighbours(0.0, 0.0, 500.0) == [1.0]
    assert PF.neighbours(500.0, 0.0, 500.0) == [499.0]

    calls = []
    p = PF.Prefetcher(lru, lambda q, ivs, vals: calls.append(list(vals)) or [0] * len(vals))
    p.submit(("k",), None, [], [4.0, 5.0])  # 4 is known already: only 5 is scored
    assert p.idle.wait(10)
    assert calls == [[5.0]] and lru.has(("k",), 5.0)
