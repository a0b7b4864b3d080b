"""RMU through the HTTP API (tiny backend): training runs (4xx for bad hyperparameters, progress,
cancel, resume after the server is SIGKILLed), and the model variant rmu:<name> in /api/mcq,
/api/generate and sweep jobs, checked against the library's own computation."""
from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from api_helpers import app, client, engine, lock, ok, wait_done, wait_job, wait_ok  # noqa: F401 (fixtures)
from browser_helpers import start_server, stop
from unlearn_core import rmu
from unlearn_core.client import UnlearnClient
from unlearn_core.data import load_question_set
from unlearn_core.mcq import score_question

GEO = "mmlu:high_school_geography"


def wait_run(client, name: str, timeout: float = 120) -> dict:
    return wait_done(client, f"/api/rmu/{name}", timeout, poll=0.05)


@pytest.fixture(scope="module")
def trained(client):
    """rmu:api, trained through the API with the tiny backend's defaults (assets/rmu.toml)."""
    r = ok(client.post("/api/rmu", json={"name": "api", "target": "bio-basics"}), 202)
    assert r["variant"] == "rmu:api" and r["steps"] == 12
    done = wait_run(client, "api")
    assert done["status"] == "done" and done["step"] == 12, done
    assert set(done["last"]) == {"forget_loss", "retain_loss", "loss"}
    return "rmu:api"


@pytest.mark.parametrize("body, code, message", [
    ({"name": "x", "lr": -1}, 422, "lr"),
    ({"name": "x", "steps": 0}, 422, "steps"),
    ({"name": "bad name!"}, 422, "name"),
    ({"name": "x", "layer": 7}, 400, "layer 7 is not a layer of this model (0..1)"),
    ({"name": "x", "update_layers": [0, 4]}, 400, "update_layers [4]"),
    ({"name": "x", "target": "no-such-target"}, 404, "no-such-target"),
    ({"name": "x", "delay_per_step": 1.0}, None, None),  # accepted by a test server only
])
def test_bad_hyperparameters_get_4xx(client, body, code, message):
    r = client.post("/api/rmu", json=body)
    if code is None:
        assert r.status_code == 202, r.text
        ok(client.post("/api/rmu/x/cancel"))
        assert wait_run(client, "x")["status"] == "cancelled"
        return
    assert r.status_code == code, r.text
    assert message in r.text


def test_mcq_and_generate_on_the_variant(client, engine, lock, trained):
    q = load_question_set("wmdp-bio", engine.settings.data_dir).questions[0]
    base = ok(client.post("/api/mcq", json={"question_id": q.id, "set": "wmdp-bio"}))
    var = ok(client.post("/api/mcq", json={"question_id": q.id, "set": "wmdp-bio", "variant": trained}))
    both = ok(client.post("/api/mcq", json={"question_id": q.id, "set": "wmdp-bio", "variant": trained,
                                            "interventions": [{"features": [1], "value": 20.0}], "values": [20.0]}))
    assert var["variant"] == trained and base["variant"] == "base"
    with lock:
        expect_base = score_question(engine, q)
        with rmu.applied(engine, trained):
            expect_var = score_question(engine, q)
    assert base["base"]["probs"] == pytest.approx(list(expect_base.probs), abs=1e-6)
    assert var["base"]["probs"] == pytest.approx(list(expect_var.probs), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(var["base"]["probs"], base["base"]["probs"])) > 1e-4  # it changed
    assert both["base"]["probs"] == pytest.approx(var["base"]["probs"], abs=1e-6)  # interventions on top of it
    assert engine.variant == "" and engine.cache_namespace() == "tiny|float32"  # nothing left applied
    g = ok(client.post("/api/generate", json={"prompt": "The virus", "max_new_tokens": 8, "variant": trained}))
    g0 = ok(client.post("/api/generate", json={"prompt": "The virus", "max_new_tokens": 8}))
    assert g["base"] != g0["base"]
    r = client.post("/api/mcq", json={"question_id": q.id, "set": "wmdp-bio", "variant": "rmu:missing"})
    assert r.status_code == 400 and "not found" in r.text
    assert client.post("/api/mcq", json={"question_id": q.id, "variant": "sft:x"}).status_code == 422


def test_job_evaluates_the_variant_as_a_row(client, engine, lock, trained):
    from unlearn_core.features import corpus_docs, windows_for
    from unlearn_core.metrics import mean_nll
    from unlearn_core.server.jobs import LOSS_CTX

    spec = {"thresholds": [0.5], "ns": [2], "values": [20.0], "forget_set": "wmdp-bio", "side_effect_sets": [GEO],
            "known": False, "question_limit": 3, "selection_tokens": 200, "loss_tokens": 300, "variants": [trained]}
    created = ok(client.post("/api/jobs", json=spec), 201)
    assert created["total"] == 3
    j = wait_job(client, created["id"])
    assert j["status"] == "done", j.get("error")
    rows = {r["config"]: r for r in j["results"]}
    assert set(rows) == {"none", "t=0.5|n=2|c=20", trained}
    v = rows[trained]
    assert v["mode"] == "rmu" and v["variant"] == trained and v["n_questions"] == rows["none"]["n_questions"]
    with lock:  # independent: the same windows scored with and without the delta
        windows = windows_for(engine, corpus_docs(engine, "webtext"), 300, LOSS_CTX)
        clean = mean_nll(engine, windows)[0]
        with rmu.applied(engine, trained):
            on = mean_nll(engine, windows)[0]
    assert v["loss_added"] == pytest.approx(on - clean, abs=1e-5) and abs(v["loss_added"]) > 1e-4
    bad = client.post("/api/jobs", json={**spec, "variants": ["rmu:missing"]})
    assert bad.status_code == 400 and "not found" in bad.text


def test_killed_server_resumes_the_run(tmp_path, shared_data):
    cache = tmp_path / "cache"
    log = tmp_path / "server.log"
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=120)
    try:
        c = UnlearnClient(url, token="")
        c.train_rmu("killed", steps=60, delay_per_step=0.1)
        ckpt = cache / "rmu" / "killed" / "checkpoint.safetensors"
        end = time.time() + 60
        while not ckpt.exists():  # at least one checkpoint (every 10 steps)
            assert time.time() < end, c.rmu_run("killed")
            time.sleep(0.05)
        time.sleep(0.5)
        at_kill = c.rmu_run("killed")["step"]
        assert 10 <= at_kill < 60, "the kill must land mid-training"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        stop(p)
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=120)
    try:
        c = UnlearnClient(url, token="")
        r = c.rmu_run("killed")
        assert r["note"] and "resumed" in r["note"]
        done = c.wait_rmu("killed", timeout=120)
        assert done["status"] == "done" and done["step"] == 60, done
    finally:
        stop(p)
    card = json.loads((cache / "rmu" / "killed" / "card.json").read_text())
    assert [h["step"] for h in card["history"]] == list(range(1, 61))  # no step lost or counted twice
    # the resumed delta equals an uninterrupted run's (this process, same tiny model and data)
    from unlearn_core.targets import get_target
    from unlearn_core.tiny import tiny_engine

    e = tiny_engine(cache_dir=str(tmp_path / "straight"))
    cfg = rmu.default_config("tiny", steps=60)
    straight = rmu.train(e, "straight", get_target("bio-basics"), cfg)
    a, _ = rmu.load_delta(cache, "killed")
    b, _ = rmu.load_delta(e.settings.cache_dir, "straight")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert card["history"][-1]["loss"] == pytest.approx(straight["history"][-1]["loss"], rel=1e-3)
