"""Evaluation jobs on Ray (tiny backend): identical to local jobs, a killed worker loses and
duplicates nothing, a killed driver resumes with nothing lost or duplicated.

One local Ray instance (2 CPUs, 127.0.0.1) serves the in-process tests; the driver-kill test
runs the CLI in its own process group (it starts its own instance) and SIGKILLs the group.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from browser_helpers import clean_env  # noqa: E402

from unlearn_core.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GEO = "mmlu:high_school_geography"
ARGS = ["sweep", "--tiny", "--thresholds", "0.5", "--n", "1,2,3", "--clamps", "10,50", "--limit", "6",
        "--all-questions", "--selection-tokens", "200", "--loss-tokens", "100", "--side-set", GEO]
KEYS = {"none"} | {f"t=0.5|n={n}|c={v}" for n in (1, 2, 3) for v in (10, 50)}


def by_config(rows: list[dict]) -> dict[str, dict]:
    """Rows keyed by configuration, without the wall time (the only field allowed to differ)."""
    return {r["config"]: {k: v for k, v in r.items() if k != "seconds"} for r in rows}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from unlearn_core.ray_backend import start_ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("UNLEARN_OFFLINE", "1")
    start_ray(2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, shared_data) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("sweep_local")
    assert main([*ARGS, "--backend", "local", "--out", str(out), "--cache-dir", str(out / "cache")]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert set(by_config(rows)) == KEYS
    return by_config(jsonl(next((out / "jobs").iterdir()) / "results.jsonl"))


def test_local_and_ray_give_identical_results(ray_session, local_rows, tmp_path):
    assert main([*ARGS, "--backend", "ray", "--workers", "2", "--out", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = jsonl(next((tmp_path / "jobs").iterdir()) / "results.jsonl")
    assert len(rows) == len(KEYS)
    assert by_config(rows) == local_rows
    assert json.loads((tmp_path / "results.json").read_text())["backend"] == "ray"


def test_killed_worker_loses_and_duplicates_nothing(ray_session, local_rows, tmp_path):
    from unlearn_core.ray_backend import EngineRecipe, RayPool
    from unlearn_core.server.jobs import JobRunner, JobStore
    from unlearn_core.server.schemas import JobSpec
    from unlearn_core.server.state import ServerState
    from unlearn_core.tiny import tiny_engine

    engine = tiny_engine(cache_dir=str(tmp_path / "cache"))
    engine.settings.job_backend = "ray"
    runner = JobRunner(ServerState(lambda: engine))
    runner.store = JobStore(tmp_path / "jobs")
    # each task sleeps 1 s after scoring, so the kill lands while a worker holds a task
    runner.pool = pool = RayPool(EngineRecipe.of(engine), workers=2, task_delay_s=1.0).start()
    spec = runner.prepare(JobSpec(thresholds=[0.5], ns=[1, 2, 3], values=[10.0, 50.0], question_limit=6, known=False,
                                  selection_tokens=200, loss_tokens=100, side_effect_sets=[GEO]))
    job = runner.store.create(spec, engine.cache_namespace())
    victim = pool.infos()[0]["pid"]

    def kill_when_busy() -> None:
        end = time.time() + 60
        while job.phase != "configurations" and time.time() < end:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        assert runner.run_job(job)
    finally:
        killer.join()
        runner.close_pool()
    assert job.status == "done", job.error
    assert pool.retried >= 1, "the killed worker held no task: the test proved nothing"
    rows = jsonl(runner.store.dir(job.id) / "results.jsonl")
    assert len(rows) == len(KEYS) and by_config(rows) == local_rows


def test_killed_driver_resumes_without_loss_or_duplicates(local_rows, tmp_path, shared_data):
    cmd = [sys.executable, "-m", "unlearn_core", *ARGS, "--backend", "ray", "--workers", "2", "--out", str(tmp_path),
           "--cache-dir", str(tmp_path / "cache"), "--delay-per-config", "1.0"]
    env = {**clean_env(), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "driver.log", "wb")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.time() + 120
        while True:
            dirs = list((tmp_path / "jobs").glob("*/results.jsonl"))
            if dirs and len(jsonl(dirs[0])) >= 3:  # the baseline and some configurations
                break
            assert p.poll() is None and time.time() < end, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the driver and the Ray instance it started
        p.wait(10)
    path = dirs[0]
    before = jsonl(path)
    assert 3 <= len(before) < len(KEYS), "the kill must land mid-sweep"
    assert not (path.parent / "status.json").exists()

    r = subprocess.run(cmd + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming run" in r.stderr
    rows = jsonl(path)
    keys = [x["config"] for x in rows]
    assert len(keys) == len(set(keys)) == len(KEYS) and set(keys) == KEYS
    assert rows[: len(before)] == before  # nothing persisted before the kill was recomputed
    assert by_config(rows) == local_rows
    assert json.loads((path.parent / "status.json").read_text())["status"] == "done"
