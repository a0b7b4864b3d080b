"""RMU through the HTTP API (tiny backend): training runs (4xx for bad hyperparameters, progress,
cancel, resume after the server is SIGKILLed), and the model variant rmu:<name> in /api/mcq,
/api/generate and sweep jobs, checked against the library's own computation."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch
from api_helpers import answer, app, client, engine, lock, ok, small_job, wait_done, wait_job, wait_ok  # noqa: F401 (fixtures)
from browser_helpers import start_server, stop

from unlearn_core.data.loaders import load_question_set
from unlearn_core.evaluation.mcq import score_question
from unlearn_core.features import text_search as TXS
from unlearn_core.server.client import UnlearnClient
from unlearn_core.training import rmu

GEO = "mmlu:high_school_geography"


def wait_run(client, name: str, timeout: float = 120) -> dict:
    return wait_done(client, f"/api/rmu/{name}", timeout, poll=0.05)


@pytest.fixture(scope="module")
def trained(client):
    """rmu:api, trained through the API with the tiny backend's defaults (core/assets/rmu.toml)."""
    r = ok(client.post("/api/rmu", json={"name": "api", "target": "bio-basics"}), 202)
    assert r["variant"] == "rmu:api" and r["steps"] == 12
    done = wait_run(client, "api")
    assert done["status"] == "done" and done["step"] == 12, done
    assert set(done["last"]) == {"forget_loss", "retain_loss", "loss"}
    return "rmu:api"


@pytest.mark.parametrize(
    "body, code, message",
    [
        ({"name": "x", "lr": -1}, 422, "lr"),
        ({"name": "x", "steps": 0}, 422, "steps"),
        ({"name": "bad name!"}, 422, "name"),
        ({"name": "x", "layer": 7}, 400, "layer 7 is not a layer of this model (0..1)"),
        ({"name": "x", "update_layers": [0, 4]}, 400, "update_layers [4]"),
        ({"name": "x", "target": "no-such-target"}, 404, "no-such-target"),
        ({"name": "x", "delay_per_step": 1.0}, None, None),  # accepted by a test server only
    ],
)
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
    both = ok(
        client.post(
            "/api/mcq",
            json={
                "question_id": q.id,
                "set": "wmdp-bio",
                "variant": trained,
                "interventions": [{"features": [1], "value": 20.0}],
                "values": [20.0],
            },
        )
    )
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


def test_feature_and_metric_endpoints_on_the_variant(client, engine, lock, trained):
    """activations, search, dashboard, select, loss_added and perplexity run on the variant in place
    of the model as loaded: the same numbers as the library's with rmu.applied, different from the
    base model's, and no cache (activation LRU, statistics, clean loss) hands one model's numbers
    to the other."""
    from unlearn_core.evaluation import metrics as MT
    from unlearn_core.features import stats as F
    from unlearn_core.method.interventions import Intervention

    text = "The virus spreads quickly."
    iv = {"features": [2, 3], "value": 20.0}
    body = {
        "activations": {"text": text, "features": [1, 5], "top_k": 4},
        "features/search": {"text": text, "k": 5, "rank": "max", "background": None},
        "features/dashboard": {"feature": 2, "corpora": ["webtext"], "n_tokens": 200, "k": 2, "neuronpedia": False},
        "features/select": {"threshold": 0.5, "n": 4, "n_tokens": 200},
        "targets/select": {"target": "bio-basics", "threshold": 0.5, "n": 4},
        "loss_added": {"corpus": "webtext", "interventions": [iv], "n_tokens": 200},
        "perplexity": {"corpus": "wikitext", "part": "heldout", "interventions": [iv], "n_tokens": 200},
    }
    base = {k: answer(client, f"/api/{k}", b) for k, b in body.items()}  # base first: caches filled
    var = {k: answer(client, f"/api/{k}", {**b, "variant": trained}) for k, b in body.items()}
    again = {k: answer(client, f"/api/{k}", b) for k, b in body.items()}
    assert all(r["variant"] == trained for r in var.values()) and all(r["variant"] == "base" for r in base.values())
    ivs = [Intervention("tiny", (2, 3), 20.0)]
    with lock:
        with rmu.applied(engine, trained):
            acts = F.token_activations(engine, "tiny", text, [1, 5], top_k=4)
            hits = TXS.search_by_text(engine, "tiny", text, k=5)
            docs = F.corpus_docs(engine, "wikitext@heldout")
            ppl = MT.perplexity(engine, docs, None, n_tokens=200), MT.perplexity(engine, docs, ivs, n_tokens=200)
            win = MT.corpus_windows(engine.model, F.corpus_docs(engine, "webtext"), 200, 256)
            clean, inter = MT.mean_nll(engine, win)[0], MT.mean_nll(engine, win, ivs)[0]
            fstats = F.feature_stats(engine, "tiny", "wmdp-bio-text@train", n_tokens=200)
            rstats = F.feature_stats(engine, "tiny", "wikitext@train", n_tokens=200)
        base_acts = F.token_activations(engine, "tiny", text, [1, 5], top_k=4)
    assert engine.variant == ""
    a = var["activations"]
    assert sum(a["values"], []) == pytest.approx(sum(acts["values"], []), abs=1e-5)
    assert sum(base["activations"]["values"], []) == pytest.approx(sum(base_acts["values"], []), abs=1e-5)
    assert max(abs(x - y) for x, y in zip(sum(a["values"], []), sum(base_acts["values"], []))) > 1e-3  # it changed
    assert a["cached"] is False  # the base model's activations of the same text were not reused
    assert [r["feature"] for r in var["features/search"]["features"]] == [r["feature"] for r in hits]
    sel = F.select_features(fstats.freq, rstats.freq, 0.5, 4)
    assert [r["feature"] for r in var["features/select"]["features"]] == [r["feature"] for r in sel]
    assert [r["forget_freq"] for r in var["features/select"]["features"]] == pytest.approx(
        [r["forget_freq"] for r in sel], abs=1e-6
    )
    assert var["features/dashboard"]["corpora"]["webtext"] != base["features/dashboard"]["corpora"]["webtext"]
    assert [r["forget_freq"] for r in var["targets/select"]["features"]] != [
        r["forget_freq"] for r in base["targets/select"]["features"]
    ]
    la = var["loss_added"]
    assert la["clean_loss"] == pytest.approx(clean, abs=1e-5) and la["intervened_loss"] == pytest.approx(
        inter, abs=1e-5
    )
    assert abs(la["clean_loss"] - base["loss_added"]["clean_loss"]) > 1e-4  # not the base model's cached clean loss
    assert var["perplexity"]["base"]["perplexity"] == pytest.approx(ppl[0]["perplexity"], rel=1e-4)
    assert var["perplexity"]["intervened"]["perplexity"] == pytest.approx(ppl[1]["perplexity"], rel=1e-4)
    for k in body:  # and the variant's numbers did not leak into the base model's caches
        b, g = dict(base[k]), dict(again[k])
        b.pop("cached", None), g.pop("cached", None)
        assert g == b, k
    r = client.post("/api/activations", json={"text": text, "variant": "rmu:missing"})
    assert r.status_code == 400 and "not found" in r.text


# a job small enough for the tiny backend: one clamp row, three questions, 300 loss tokens
SMALL_JOB = small_job(ns=[2], values=[20.0], question_limit=3, loss_tokens=300)


def test_job_evaluates_the_variant_as_a_row(client, engine, lock, trained):
    from unlearn_core.evaluation.metrics import mean_nll
    from unlearn_core.features.stats import corpus_docs, windows_for
    from unlearn_core.server.jobs import LOSS_CTX

    spec = {**SMALL_JOB, "variants": [trained]}
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
    bad = client.post("/api/jobs", json={**spec, "model_variant": "rmu:missing"})
    assert bad.status_code == 400 and "not found" in bad.text


def test_job_clamps_on_top_of_the_variant(client, engine, lock, trained):
    """model_variant: the clean row and the clamp rows run on the RMU model (clamps on top of it),
    with the base model's questions, feature selection and clean loss."""
    from unlearn_core.evaluation.mcq import accuracy, score_questions
    from unlearn_core.evaluation.metrics import mean_nll
    from unlearn_core.features.stats import corpus_docs, windows_for
    from unlearn_core.method.interventions import Intervention
    from unlearn_core.server.jobs import LOSS_CTX

    spec = dict(SMALL_JOB)
    base_job = wait_job(client, ok(client.post("/api/jobs", json=spec), 201)["id"])
    on_job = wait_job(
        client, ok(client.post("/api/jobs", json={**spec, "model_variant": trained, "variants": [trained]}), 201)["id"]
    )
    assert base_job["status"] == on_job["status"] == "done", on_job.get("error")
    b = {r["config"]: r for r in base_job["results"]}
    o = {r["config"]: r for r in on_job["results"]}
    key = "t=0.5|n=2|c=20"
    assert o[key]["features"] == b[key]["features"]  # the same selection (statistics of the model as loaded)
    assert o["none"]["variant"] == o[key]["variant"] == trained and b[key]["variant"] is None
    for f in ("forget_accuracy", "side_effect_accuracy", "loss_added"):  # its clean row is the variant's row
        assert o["none"][f] == pytest.approx(o[trained][f], abs=1e-6), f
    ivs = [Intervention("tiny", tuple(o[key]["features"]), 20.0)]
    qs = {
        "forget": load_question_set("wmdp-bio", engine.settings.data_dir).questions[:3],
        GEO: load_question_set(GEO, engine.settings.data_dir).questions[:3],
    }
    with lock:  # independent: the clamp hooked on the model with the delta added
        windows = windows_for(engine, corpus_docs(engine, "webtext"), 300, LOSS_CTX)
        clean = mean_nll(engine, windows)[0]
        with rmu.applied(engine, trained):
            accs = {k: accuracy(score_questions(engine, v, ivs)) for k, v in qs.items()}
            on = mean_nll(engine, windows, ivs)[0]
    assert o[key]["forget_accuracy"] == pytest.approx(accs["forget"], abs=1e-9)
    assert o[key]["side_effect_accuracy"][GEO] == pytest.approx(accs[GEO], abs=1e-9)
    assert o[key]["loss_added"] == pytest.approx(on - clean, abs=1e-5)
    assert abs(o[key]["loss_added"] - b[key]["loss_added"]) > 1e-4  # not the base model's clamp
    assert engine.variant == ""


def test_killed_server_resumes_the_run(tmp_path, shared_data):
    cache = tmp_path / "cache"
    log = tmp_path / "server.log"
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=900)
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
    p, url = start_server(log, ["--tiny", "--cache-dir", str(cache)], timeout=900)
    try:
        c = UnlearnClient(url, token="")
        r = c.rmu_run("killed")
        assert r["note"] and "resumed" in r["note"]
        done = c.wait_rmu("killed", timeout=900)
        assert done["status"] == "done" and done["step"] == 60, done
    finally:
        stop(p)
    card = json.loads((cache / "rmu" / "killed" / "card.json").read_text())
    assert [h["step"] for h in card["history"]] == list(range(1, 61))  # no step lost or counted twice
    # the resumed delta equals an uninterrupted run's (this process, same tiny model and data)
    from unlearn_core.evaluation.targets import get_target
    from unlearn_core.model.tiny import tiny_engine

    e = tiny_engine(cache_dir=str(tmp_path / "straight"))
    cfg = rmu.default_config("tiny", steps=60)
    straight = rmu.train(e, "straight", get_target("bio-basics"), cfg)
    a, _ = rmu.load_delta(cache, "killed")
    b, _ = rmu.load_delta(e.settings.cache_dir, "straight")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert card["history"][-1]["loss"] == pytest.approx(straight["history"][-1]["loss"], rel=1e-3)
