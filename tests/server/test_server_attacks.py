"""The attack bench over HTTP (tiny backend, a target the tiny model knows facts of): bad requests
are clear 4xx, a run reports progress per row and an ETA, is cancelled and resumed without
computing a finished row again (after a cancel, and after the server stopped mid-run with a torn
last line), and its rows are the library's ``run_bench`` rows."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from api_helpers import ok, wait_done, wait_ok
from fastapi.testclient import TestClient

from unlearn_core.attacks import bench as B
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.server import create_app
from unlearn_core.server.client import ServerError, UnlearnClient

TARGETS = Path(__file__).resolve().parents[1] / "fixtures" / "robustness_targets.toml"
SPEC = {"target": "bio-tiny", "defences": ["default", "none"], "attacks": ["rephrase", "filler"]}
ROWS = [["default", "rephrase"], ["default", "filler"], ["none", "rephrase"], ["none", "filler"]]


def new_engine(cache: Path):
    engine = tiny_engine(cache_dir=str(cache))
    engine.settings = dataclasses.replace(engine.settings, targets_file=str(TARGETS))
    return engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory, shared_data):
    return new_engine(tmp_path_factory.mktemp("attack_server") / "cache")


@pytest.fixture(scope="module")
def served(engine):
    app = create_app(lambda: engine, token="", allow_test_options=True)
    with TestClient(app) as c:
        wait_ok(c)
        yield c, app


def wait_run(c, run_id: str, timeout: float = 300) -> dict:
    return wait_done(c, f"/api/attacks/{run_id}", timeout, poll=0.05)


class Computed:
    """Counts the rows the bench computes in this process (the server's worker runs here too)."""

    def __init__(self, monkeypatch):
        self.rows: list[tuple[str, str]] = []
        plain = B.run_one

        def counted(engine, inputs, defence, attack, k=None):
            row = plain(engine, inputs, defence, attack, k)
            self.rows.append((row["defence"], row["attack"]))
            return row

        monkeypatch.setattr(B, "run_one", counted)


@pytest.mark.parametrize(
    "body, code, message",
    [
        ({"target": "no-such-target"}, 404, "unknown target 'no-such-target'"),
        ({**SPEC, "attacks": ["rephrase", "relearnn"]}, 400, "unknown attack(s) ['relearnn']"),
        ({**SPEC, "defences": ["clampy"]}, 422, "defences"),
        ({**SPEC, "defences": ["none", "none"]}, 422, "a defence is named twice: none"),
        ({**SPEC, "attacks": []}, 422, "attacks"),
        ({**SPEC, "defences": ["rmu:missing"]}, 400, "not found"),
        ({**SPEC, "probes": "/tmp/probes.json"}, 404, "file paths are not accepted"),
        ({**SPEC, "probes": "quiz:retain"}, 400, "missing 'source_id'"),
        ({"target": "wmdp-bio", "attacks": ["rephrase"]}, 400, "has no probe set"),
        ({**SPEC, "part": "middle"}, 422, "part"),
        ({**SPEC, "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_requests_are_clear_4xx(served, body, code, message):
    c, _ = served
    r = c.post("/api/attacks", json=body)
    assert r.status_code == code, r.text
    assert message in r.json()["detail"], r.text


def test_unknown_runs_are_404(served):
    c, _ = served
    for path in ("/api/attacks/nope", "/api/attacks/nope/result", "/api/attacks/bad%20id"):
        r = c.get(path)
        assert r.status_code == 404 and "no attack run" in r.text, (path, r.text)
    for verb in ("cancel", "resume"):
        assert c.post(f"/api/attacks/nope/{verb}").status_code == 404


def test_a_run_reports_progress_is_cancelled_and_resumed_without_recomputing(served, engine, monkeypatch):
    c, app = served
    run = ok(c.post("/api/attacks", json={**SPEC, "delay_per_row": 1.0}), 202)
    assert run["status"] == "queued" and (run["done"], run["total"]) == (0, 4) and run["part"] == "heldout"
    assert run["probes"] == "quiz:bio-probes"  # the target's, resolved when submitted
    seen = []
    end = time.time() + 300
    while (s := ok(c.get(f"/api/attacks/{run['id']}")))["done"] < 2:
        seen.append(s)
        assert s["status"] in ("queued", "running") and time.time() < end, s
        time.sleep(0.05)
    seen.append(s)
    assert "rows" in {x["phase"] for x in seen} and s["phase"] == "rows"
    assert s["current"] == "default × filler"  # the row being computed (or, in the delay, just computed)
    assert all(x["eta_s"] is None for x in seen if x["done"] == 0)  # rows differ tenfold: no guess before one
    assert s["eta_s"] is not None  # from the first row on
    ok(c.post(f"/api/attacks/{run['id']}/cancel"))
    cancelled = wait_run(c, run["id"])
    assert cancelled["status"] == "cancelled" and 2 <= cancelled["done"] < 4
    part = ok(c.get(f"/api/attacks/{run['id']}/result"))
    assert part["complete"] is False and len(part["rows"]) == cancelled["done"]
    assert part["n_known_forget"] > 0 and part["rows"][0]["facts"]
    assert c.post(f"/api/attacks/{run['id']}/cancel").status_code == 200  # cancelling again: harmless

    computed = Computed(monkeypatch)
    resumed = ok(c.post(f"/api/attacks/{run['id']}/resume"), 202)
    assert resumed["status"] == "queued" and "already done" in resumed["note"]
    done = wait_run(c, run["id"])
    assert done["status"] == "done" and done["done"] == 4 and done["done_at_start"] == cancelled["done"]
    assert computed.rows == [tuple(k) for k in ROWS[cancelled["done"] :]]  # only the rows not on disk
    result = ok(c.get(f"/api/attacks/{run['id']}/result"))
    assert result["complete"] and [[r["defence"], r["attack"]] for r in result["rows"]] == ROWS
    assert result["rows"][: cancelled["done"]] == part["rows"]  # the finished rows kept as they were
    r = c.post(f"/api/attacks/{run['id']}/resume")
    assert r.status_code == 400 and "finished" in r.text

    # the rows are the library's: run_bench on the same engine, under the server's lock
    from unlearn_core.attacks.defences import parse_defences
    from unlearn_core.evaluation.targets import engine_target

    with app.state.server.lock:
        t = engine_target(engine, "bio-tiny")
        want = B.run_bench(engine, t, parse_defences(engine, t, "default,none"), ["rephrase", "filler"])
    for got, w in zip(result["rows"], want["rows"]):
        got, w = dict(got), dict(w)
        got.pop("wall_s"), w.pop("wall_s")
        assert got == w
    assert {k: result[k] for k in ("n_known_forget", "n_known_retain", "probes", "defences")} == {
        k: want[k] for k in ("n_known_forget", "n_known_retain", "probes", "defences")
    }
    default = result["rows"][0]
    assert default["n_forgotten"] > 0  # the clamp makes the tiny model forget: the test has facts to count
    f = default["facts"][0]
    assert {"original", "attacked", "p_clean", "p_defended", "p_attacked"} <= set(f) and f["attacked"] != f["original"]
    labels = ok(c.get("/api/info"))["lock_stats"]["by_label"]
    assert "background: attack bench" in labels  # the bench's holds go after every waiting request

    runs = ok(c.get("/api/attacks"))
    assert run["id"] in [x["id"] for x in runs["runs"]] and runs["attacks"]["rephrase"] == "api"


def test_a_stopped_server_resumes_the_run_and_keeps_its_rows(tmp_path, shared_data, monkeypatch):
    """The server stops mid-run (its worker stops at the next hold, as on SIGTERM; the last line
    torn as by a kill mid-write): a new server on the same cache resumes it, computing only the
    rows not on disk."""
    cache = tmp_path / "cache"
    engine = new_engine(cache)
    spec = {**SPEC, "defences": ["default"], "delay_per_row": 2.0}
    app = create_app(lambda: engine, token="", allow_test_options=True)
    with TestClient(app) as c:
        wait_ok(c)
        run = ok(c.post("/api/attacks", json=spec), 202)
        end = time.time() + 300
        while ok(c.get(f"/api/attacks/{run['id']}"))["done"] < 1:
            assert time.time() < end
            time.sleep(0.05)
    # the TestClient's exit stopped the workers (lifespan): the run is unfinished on disk
    stopped = app.state.attacks.get(run["id"])
    while stopped.status != "queued":  # the worker saw the stop at its next check
        assert time.time() < end
        time.sleep(0.05)
    folder = cache / "attacks" / run["id"]
    assert not (folder / "status.json").exists()
    first = (folder / "rows.jsonl").read_text().splitlines()
    assert len(first) == 1
    with open(folder / "rows.jsonl", "a") as f:
        f.write('{"defence": "default", "attack": "fil')  # torn
    computed = Computed(monkeypatch)
    app = create_app(lambda: engine, token="", allow_test_options=True)
    with TestClient(app) as c:
        wait_ok(c)
        s = ok(c.get(f"/api/attacks/{run['id']}"))
        assert "resumed after a server stop with 1 of 2 rows already done" in s["note"]
        done = wait_run(c, run["id"])
        assert done["status"] == "done" and done["done_at_start"] == 1
        result = ok(c.get(f"/api/attacks/{run['id']}/result"))
    assert computed.rows == [("default", "filler")]
    assert [r["attack"] for r in result["rows"]] == ["rephrase", "filler"]
    lines = (folder / "rows.jsonl").read_text().splitlines()
    assert lines[0] == first[0] and len(lines) == 2  # the torn line dropped, the finished row kept byte for byte


def test_the_client_methods(served):
    """The client's attack methods against the same routes (the server in this process)."""
    c, _ = served
    client = UnlearnClient("http://testserver", token="")

    class Session:  # the client's transport, through the in-process app (no socket)
        def request(self, method, url, json=None, params=None, headers=None, timeout=None):
            return c.request(method, url, json=json, params=params, headers=headers)

    client.session = Session()
    started = client.start_attack("bio-tiny", ["none"], ["rephrase"])
    assert started["defences"] == ["none"] and started["attacks"] == ["rephrase"]
    done = client.wait_attack(started["id"], timeout=300, poll=0.05)
    assert done["status"] == "done" and client.attack_run(started["id"])["done"] == 1
    res = client.attack_result(started["id"])
    assert res["complete"] and res["rows"][0]["n_forgotten"] == 0  # the clean control forgets nothing
    assert started["id"] in [r["id"] for r in client.attack_runs()["runs"]]
    with pytest.raises(ServerError, match="finished"):
        client.resume_attack(started["id"])
    assert client.cancel_attack(started["id"])["status"] == "done"  # nothing to stop
