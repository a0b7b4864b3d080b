"""The persistent method through the HTTP API (tiny backend): training runs (4xx for bad settings,
progress with the loss curve, cancel, resume after the server is SIGKILLed), and the model variant
persist:<name> on every endpoint that takes rmu:<name> (checked against the library's computation
where it computes a number, and 400 for a missing run everywhere)."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import pytest
import torch
from api_helpers import answer, client, lock, ok, small_job, wait_done, wait_job  # noqa: F401 (fixtures)
from browser_helpers import start_server, stop

from unlearn_core.data.loaders import load_question_set
from unlearn_core.evaluation.mcq import score_question
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.server import create_app
from unlearn_core.server.client import UnlearnClient
from unlearn_core.training import persist as P
from unlearn_core.training import variants as V

TARGETS = Path(__file__).resolve().parents[1] / "fixtures" / "robustness_targets.toml"
TEXT = "The virus spreads quickly."
IV = {"features": [2, 3], "value": 20.0}
# every endpoint that takes a model variant, with a body small enough for the tiny backend
BODIES = {
    "mcq": {"question_id": None, "set": "wmdp-bio"},
    "generate": {"prompt": "The virus", "max_new_tokens": 8},
    "activations": {"text": TEXT, "features": [1, 5], "top_k": 4},
    "features/search": {"text": TEXT, "k": 5, "rank": "max", "background": None},
    "features/dashboard": {"feature": 2, "corpora": ["webtext"], "n_tokens": 200, "k": 2, "neuronpedia": False},
    "features/select": {"threshold": 0.5, "n": 4, "n_tokens": 200},
    "targets/select": {"target": "bio-basics", "threshold": 0.5, "n": 4},
    "loss_added": {"corpus": "webtext", "interventions": [IV], "n_tokens": 200},
    "perplexity": {"corpus": "wikitext", "part": "heldout", "interventions": [IV], "n_tokens": 200},
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, shared_data):
    e = tiny_engine(cache_dir=str(tmp_path_factory.mktemp("persist_server") / "cache"))
    e.settings = dataclasses.replace(e.settings, targets_file=str(TARGETS))
    return e


@pytest.fixture(scope="module")
def app(engine):
    return create_app(lambda: engine, token="", allow_test_options=True)


def wait_run(client, name: str, timeout: float = 120) -> dict:
    return wait_done(client, f"/api/persist/{name}", timeout, poll=0.05)


@pytest.fixture(scope="module")
def trained(client):
    """persist:api, trained through the API with the tiny backend's defaults (core/assets/persist.toml)."""
    r = ok(client.post("/api/persist", json={"name": "api", "target": "bio-tiny"}), 202)
    assert r["variant"] == "persist:api" and r["steps"] == 8
    done = wait_run(client, "api")
    assert done["status"] == "done" and done["step"] == 8, done
    assert set(done["last"]) == {"forget_loss", "retain_loss", "lm_loss", "loss"}
    assert [h["step"] for h in done["history"]] == list(range(1, 9))  # the training curve
    assert done["history"][0]["forget_loss"] == pytest.approx(1.0)  # all of the features' activation left
    assert done["history"][-1]["forget_loss"] < 0.5
    return "persist:api"


@pytest.mark.parametrize(
    "body, code, message",
    [
        ({"name": "x", "lr": -1}, 422, "lr"),
        ({"name": "x", "margin": -1}, 422, "margin"),
        ({"name": "x", "steps": 0}, 422, "steps"),
        ({"name": "bad name!"}, 422, "name"),
        ({"name": "x", "method": "Bad!"}, 422, "method"),
        ({"name": "x", "update_layers": [1]}, 400, "update_layers [1] must be between 0 and the SAE's layer 0"),
        ({"name": "x", "retain_layers": [5]}, 400, "retain_layers [5]"),
        ({"name": "x", "target": "no-such-target"}, 404, "no-such-target"),
        ({"name": "x", "colour": "red"}, 422, "colour"),
        ({"name": "x", "delay_per_step": 1.0}, None, None),  # accepted by a test server only
    ],
)
def test_bad_settings_get_4xx(client, body, code, message):
    r = client.post("/api/persist", json={"target": "bio-tiny", **body})
    if code is None:
        assert r.status_code == 202, r.text
        ok(client.post("/api/persist/x/cancel"))
        assert wait_run(client, "x")["status"] == "cancelled"
        return
    assert r.status_code == code, r.text
    assert message in r.text


def test_unknown_run_is_404(client):
    assert client.get("/api/persist/nothing").status_code == 404
    assert client.post("/api/persist/nothing/cancel").status_code == 404


def test_every_variant_endpoint_takes_persist(client, engine, lock, trained):
    """Each endpoint that takes rmu:<name> takes persist:<name>, says so, and answers 400 for a
    missing run and 422 for a malformed name; mcq and loss_added equal the library's numbers."""
    q = load_question_set("wmdp-bio", engine.settings.data_dir).questions[0]
    bodies = {k: ({**b, "question_id": q.id} if k == "mcq" else b) for k, b in BODIES.items()}
    base = {k: answer(client, f"/api/{k}", b) for k, b in bodies.items()}
    var = {k: answer(client, f"/api/{k}", {**b, "variant": trained}) for k, b in bodies.items()}
    for k in bodies:
        if k == "generate":  # its response names no variant: the text itself must change
            assert var[k]["base"] != base[k]["base"]
        else:
            assert var[k]["variant"] == trained and base[k]["variant"] == "base", k
        r = client.post(f"/api/{k}", json={**bodies[k], "variant": "persist:missing"})
        assert r.status_code == 400 and "not found" in r.text, (k, r.text)
        assert client.post(f"/api/{k}", json={**bodies[k], "variant": "persist:bad name"}).status_code == 422, k
    with lock:
        want_base = score_question(engine, q)
        with V.applied(engine, trained):
            want = score_question(engine, q)
    assert var["mcq"]["base"]["probs"] == pytest.approx(list(want.probs), abs=1e-6)
    assert base["mcq"]["base"]["probs"] == pytest.approx(list(want_base.probs), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(want.probs, want_base.probs)) > 1e-5  # the delta changed it
    assert var["loss_added"]["clean_loss"] != pytest.approx(base["loss_added"]["clean_loss"], abs=1e-6)
    assert engine.variant == ""


def test_job_rows_and_clamps_on_top(client, engine, trained):
    spec = small_job(ns=[2], values=[20.0], question_limit=3, loss_tokens=300)
    j = wait_job(client, ok(client.post("/api/jobs", json={**spec, "variants": [trained]}), 201)["id"])
    assert j["status"] == "done", j.get("error")
    rows = {r["config"]: r for r in j["results"]}
    assert rows[trained]["mode"] == "persist" and rows[trained]["variant"] == trained
    on = wait_job(client, ok(client.post("/api/jobs", json={**spec, "model_variant": trained}), 201)["id"])
    assert on["status"] == "done", on.get("error")
    assert {r["variant"] for r in on["results"]} == {trained}  # the clean row and the clamp on top of it
    for key in ("variants", "model_variant"):
        bad = client.post(
            "/api/jobs", json={**spec, key: ["persist:missing"] if key == "variants" else "persist:missing"}
        )
        assert bad.status_code == 400 and "not found" in bad.text


def test_attack_bench_defence(client, engine, lock, trained):
    """persist:<name> as an attack-bench defence: its rows equal the library's run_bench rows."""
    from unlearn_core.attacks import bench as B
    from unlearn_core.attacks.defences import parse_defences
    from unlearn_core.evaluation.targets import engine_target

    spec = {"target": "bio-tiny", "defences": [trained, "none"], "attacks": ["rephrase"]}
    run = ok(client.post("/api/attacks", json=spec), 202)
    done = wait_done(client, f"/api/attacks/{run['id']}", 300, poll=0.05)
    assert done["status"] == "done", done
    got = ok(client.get(f"/api/attacks/{run['id']}/result"))
    with lock:
        t = engine_target(engine, "bio-tiny")
        want = B.run_bench(engine, t, parse_defences(engine, t, f"{trained},none"), ["rephrase"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(got["rows"]) == strip(want["rows"])
    assert got["defences"][0]["variant"] == trained
    bad = client.post("/api/attacks", json={**spec, "defences": ["persist:missing"]})
    assert bad.status_code == 400 and "not found" in bad.text


def test_killed_server_resumes_the_run(tmp_path, shared_data):
    cache = tmp_path / "cache"
    log = tmp_path / "server.log"
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=900)
    try:
        c = UnlearnClient(url, token="")
        c.train_persist("killed", steps=80, delay_per_step=0.1)
        ckpt = cache / "persist" / "killed" / "checkpoint.safetensors"
        end = time.time() + 120
        while not ckpt.exists():  # at least one checkpoint (every 10 steps)
            assert time.time() < end, c.persist_run("killed")
            time.sleep(0.05)
        time.sleep(0.3)
        at_kill = c.persist_run("killed")["step"]
        assert 10 <= at_kill < 80, "the kill must land mid-training"  # 80 steps: ~7 s of margin
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        stop(p)
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=900)
    try:
        c = UnlearnClient(url, token="")
        assert "resumed" in (c.persist_run("killed")["note"] or "")
        done = c.wait_persist("killed", timeout=900)
        assert done["status"] == "done" and done["step"] == 80, done
        assert "persist:killed" in [r["variant"] for r in c.persist_runs() if r["status"] == "done"]
    finally:
        stop(p)
    card = json.loads((cache / "persist" / "killed" / "card.json").read_text())
    assert [h["step"] for h in card["history"]] == list(range(1, 81))  # no step lost or counted twice
    from unlearn_core.evaluation.targets import get_target

    e = tiny_engine(cache_dir=str(tmp_path / "straight"))
    P.train(e, "straight", get_target("bio-basics"), P.default_config("tiny", steps=80))
    a, _ = V.load(cache, "persist:killed")
    b, _ = V.load(e.settings.cache_dir, "persist:straight")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
