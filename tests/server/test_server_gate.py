"""The gated modes through the HTTP API (tiny backend): validation (4xx), the gate's report in
/api/mcq against the library's own numbers, and a job running clamp and gated side by side."""

from __future__ import annotations

import pytest
from api_helpers import app, client, engine, lock, ok, small_job, wait_job, wait_ok  # noqa: F401 (fixtures)

from unlearn_core.method.gate import calibrate, prompt_rho
from unlearn_core.method.interventions import Intervention

GEO = "mmlu:high_school_geography"


def first_id(client, set_: str = "wmdp-bio") -> str:
    return ok(client.get("/api/questions", params={"set": set_, "limit": 1}))["questions"][0]["id"]


@pytest.mark.parametrize(
    "iv",
    [
        {"features": [2], "mode": "gated"},  # no tau
        {"features": [2], "mode": "gated", "gate": 1.5},
        {"features": [2], "mode": "gated", "gate": -0.1},
        {"features": [2], "mode": "dsg", "gate_percentile": 101},
        {"features": [2], "mode": "dsg", "gate_percentile": -1},
        {"features": [2], "mode": "gated", "gate": 0.2, "gate_percentile": 95},  # both
        {"features": [2], "mode": "clamp", "gate": 0.2},  # a gate on an ungated mode
        {"features": [2], "mode": "gated", "gate": 0.2, "gate_corpus": "wikitext"},  # a corpus without a percentile
    ],
)
def test_bad_gates_get_422(client, iv):
    r = client.post("/api/mcq", json={"question_id": first_id(client), "interventions": [iv]})
    assert r.status_code == 422, r.text


def test_unknown_gate_corpus_gets_400(client):
    r = client.post(
        "/api/mcq",
        json={
            "question_id": first_id(client),
            "interventions": [{"features": [2], "mode": "gated", "gate_percentile": 95, "gate_corpus": "/etc/passwd"}],
        },
    )
    assert r.status_code == 400 and "unknown corpus" in r.text


def test_mcq_reports_the_gate(client, engine):
    from unlearn_core.data.loaders import load_question_set

    qid = first_id(client)
    q = next(x for x in load_question_set("wmdp-bio", engine.settings.data_dir).questions if x.id == qid)
    feats = (2, 3)
    rho = prompt_rho(engine, q, Intervention("tiny", feats, 40.0, "gated", 0.0))
    assert 0 < rho
    for tau, is_open in ((max(rho - 0.01, 0.0), True), (min(rho, 1.0), False)):
        body = {
            "question_id": qid,
            "values": [40.0],
            "interventions": [{"features": list(feats), "mode": "gated", "gate": tau}],
        }
        r = ok(client.post("/api/mcq", json=body))
        (g,) = r["gates"]
        assert g["rho"] == pytest.approx(rho) and g["tau"] == pytest.approx(tau) and g["open"] is is_open
        static = ok(client.post("/api/mcq", json={**body, "interventions": [{"features": list(feats), "value": 40.0}]}))
        assert g["p_correct_open"] == pytest.approx(static["curve"][0]["score"]["probs"][q.answer], abs=1e-6)
        assert g["p_correct_clean"] == pytest.approx(r["base"]["probs"][q.answer])
        got = r["curve"][0]["score"]["probs"]
        assert got == pytest.approx((static["curve"][0]["score"] if is_open else r["base"])["probs"], abs=1e-5)
    # a percentile is calibrated on the server, as the library calibrates it
    r = ok(
        client.post(
            "/api/mcq",
            json={
                "question_id": qid,
                "interventions": [
                    {
                        "features": list(feats),
                        "mode": "dsg",
                        "value": 40.0,
                        "gate_percentile": 90,
                        "gate_corpus": "webtext",
                    }
                ],
            },
        )
    )
    tau = calibrate(engine, "tiny", feats, "webtext", 90).tau
    assert r["interventions"][0]["gate"] == pytest.approx(tau) and r["interventions"][0]["gate_percentile"] == 90
    assert r["gates"][0]["tau"] == pytest.approx(tau)


def test_job_runs_clamp_and_gated_side_by_side(client):
    spec = small_job(ns=[2], question_limit=3, loss_tokens=300, modes=["clamp", "gated"], gate=0.3)
    created = ok(client.post("/api/jobs", json=spec), 201)
    assert created["total"] == 1 + 2 * 2
    j = wait_job(client, created["id"])
    assert j["status"] == "done", j.get("error")
    rows = {r["config"]: r for r in j["results"]}
    assert set(rows) == {"none"} | {f"t=0.5|n=2|c={v}|{m}" for v in (10, 50) for m in ("clamp", "gated")}
    g = rows["t=0.5|n=2|c=50|gated"]
    assert g["mode"] == "gated" and g["gate"] == 0.3 and set(g["gate_open"]) == {"forget", GEO}
    assert rows["t=0.5|n=2|c=50|clamp"]["mode"] == "clamp" and rows["t=0.5|n=2|c=50|clamp"].get("gate") is None
    bad = client.post("/api/jobs", json={**spec, "gate": None})
    assert bad.status_code == 422  # a gated mode without a tau
