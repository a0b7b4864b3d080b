"""A real server process (``python -m unlearn_core serve --tiny``) over HTTP with the client.

First every endpoint over the wire; then the crash test: a slow sweep is submitted, the server
is SIGKILLed after some but not all configurations are persisted, a new server on the same
cache dir (started by ``ensure_server(auto_start=True)``) resumes the job, and every
configuration ends up exactly once in results.jsonl, the pre-crash rows untouched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from api_helpers import small_job
from browser_helpers import clean_env, free_port, stop

from unlearn_core.server.client import ServerError, UnlearnClient, ensure_server, serve_command

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
GEO = "mmlu:high_school_geography"
IV = {"sae": "tiny", "features": [2, 3, 4], "value": 20.0}


def start(cache_dir: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = serve_command("127.0.0.1", port, ["--tiny", "--cache-dir", str(cache_dir)])
    with open(log, "ab") as f:
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env(), cwd=ROOT
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_data):
    cache = tmp_path_factory.mktemp("proc_cache")
    port = free_port()
    log = cache / "server.log"
    p = start(cache, port, log)
    client = UnlearnClient(f"http://127.0.0.1:{port}", token="")
    client.process = p
    try:
        client.wait_ready(timeout=900)
    except Exception as e:
        stop(p)
        raise AssertionError("server did not start:\n" + log.read_text()[-3000:]) from e
    yield {"client": client, "process": p, "cache": cache, "port": port, "log": log}
    stop(p)


def test_every_endpoint_over_http(server):
    c: UnlearnClient = server["client"]
    assert c.health()["status"] == "ok"
    info = c.info()
    assert info["model"] == "tiny" and info["limits"]["max_features"] == 512
    assert c.tokenize("abc")["n_tokens"] == 4
    a = c.activations("hello there", features=[1], top_k=3)
    assert a["cached"] is False and c.activations("hello there", features=[1])["cached"] is True
    c.search_task(
        "hello there", k=3, context=False
    )  # the background's statistics: past the synchronous limit until cached
    assert len(c.search("hello there", k=3, context=False)["features"]) == 3  # alone: from the cached activations
    d = c.dashboard(2, corpora=["webtext"], n_tokens=200, k=2)
    assert d["corpora"]["webtext"]["n_tokens"] == 200
    sel = c.select(threshold=0.5, n=3, n_tokens=200)
    assert all({"forget_freq", "retain_freq"} <= set(r) for r in sel["features"])
    qs = c.questions("wmdp-bio", limit=2)
    assert len(qs["questions"]) == 2 and qs["label"] == "WMDP-bio"
    assert c.questions(GEO, known=True, limit=1)["known"] is True
    m = c.mcq(qs["questions"][0]["id"], interventions=[IV], values=[0, 50])
    assert len(m["curve"]) == 2 and len(m["base"]["probs"]) == 4
    g = c.generate("Hello", interventions=[IV], max_new_tokens=5)
    assert isinstance(g["base"], str) and isinstance(g["intervened"], str)
    assert c.loss_added([IV], corpus="webtext", n_tokens=100)["n_tokens"] == 100
    assert c.perplexity("wikitext", part="heldout", interventions=[IV], n_tokens=100)["intervened"] is not None
    job = c.submit_job(small_job(ns=[1], values=[20.0], question_limit=1))
    done = c.wait_job(job["id"], timeout=900)
    assert done["status"] == "done" and done["done"] == 2
    assert job["id"] in [j["id"] for j in c.jobs()["jobs"]]
    assert c.cancel_job(job["id"])["status"] == "done"  # cancelling a finished job changes nothing
    with pytest.raises(ServerError) as e:
        c.activations("hi", sae="nope")
    assert e.value.status == 404 and "unknown SAE" in e.value.message
    with pytest.raises(ValueError, match="NaN"):  # the client refuses to send NaN ...
        c.mcq("q", interventions=[{**IV, "value": float("nan")}])
    raw = requests.post(
        c.base_url + "/api/mcq",
        data='{"question_id": "q", "interventions": [{"features": [1], "value": NaN}]}',
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert raw.status_code == 422 and "value" in raw.json()["detail"]  # ... and the server rejects it
    assert c.info()["activation_cache"]["hits"] >= 2


def results_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_killed_server_resumes_job_without_loss_or_duplicates(server):
    c: UnlearnClient = server["client"]
    job = c.submit_job(small_job(ns=[1, 2, 3], values=[10.0, 40.0], delay_per_config=0.7))
    assert job["total"] == 7
    path = server["cache"] / "jobs" / job["id"] / "results.jsonl"
    end = time.time() + 60
    while len(results_rows(path)) < 2:  # the baseline and at least one configuration
        assert time.time() < end, "no configuration persisted in time"
        time.sleep(0.05)
    server["process"].send_signal(signal.SIGKILL)
    server["process"].wait(10)
    before = results_rows(path)
    assert 2 <= len(before) < 7, "the kill must land mid-sweep"
    assert not (path.parent / "status.json").exists()

    port = free_port()
    c2 = ensure_server(
        f"http://127.0.0.1:{port}",
        auto_start=True,
        timeout=900,
        extra_args=["--tiny", "--cache-dir", str(server["cache"])],
        token="",
    )
    try:
        j = c2.wait_job(job["id"], timeout=900)
        assert j["status"] == "done", j
        assert j["note"] and "resumed" in j["note"]
        rows = results_rows(path)
        keys = [r["config"] for r in rows]
        expected = {"none"} | {f"t=0.5|n={n}|c={v:g}" for n in (1, 2, 3) for v in (10, 40)}
        assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys)) == 7
        assert rows[: len(before)] == before  # nothing persisted before the kill was recomputed
        assert [r["config"] for r in j["results"]] == keys
        assert json.loads((path.parent / "status.json").read_text())["status"] == "done"
    finally:
        c2.stop_server()
