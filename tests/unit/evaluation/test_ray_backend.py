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
from cli_helpers import tiny_sweep_args  # noqa: E402

from unlearn_core.cli import main  # noqa: E402

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
GEO = "mmlu:high_school_geography"
# 9 loss windows: 2 shards
ARGS = [*tiny_sweep_args(n="1,2,3", clamps="10,50", limit=6, loss_tokens=2100), "--side-set", GEO]
KEYS = {"none"} | {f"t=0.5|n={n}|c={v}" for n in (1, 2, 3) for v in (10, 50)}


def sweep_cli(backend: str, out: Path) -> list[str]:
    """The command line of ARGS's sweep on ``backend`` (Ray: 2 workers), its run and cache in ``out``."""
    workers = ["--workers", "2"] if backend == "ray" else []
    return [*ARGS, "--backend", backend, *workers, "--out", str(out), "--cache-dir", str(out / "cache")]


def by_config(rows: list[dict]) -> dict[str, dict]:
    """Rows keyed by configuration, without the wall time (the only field allowed to differ)."""
    return {r["config"]: {k: v for k, v in r.items() if k != "seconds"} for r in rows}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def ray_job(tmp_path: Path, loss_tokens: int):
    """A job runner on a 2-worker Ray pool and its created job (ARGS's grid, ``loss_tokens`` of
    loss added). Each task sleeps 1 s after scoring, so a kill or a cancel lands while a worker
    holds a task."""
    from unlearn_core.evaluation.ray_backend import EngineRecipe, RayPool
    from unlearn_core.model.tiny import tiny_engine
    from unlearn_core.server.jobs import JobRunner, JobStore
    from unlearn_core.server.schemas import JobSpec
    from unlearn_core.server.state import ServerState

    engine = tiny_engine(cache_dir=str(tmp_path / "cache"))
    engine.settings.job_backend = "ray"
    runner = JobRunner(ServerState(lambda: engine))
    runner.store = JobStore(tmp_path / "jobs")
    runner.pool = RayPool(EngineRecipe.of(engine), workers=2, task_delay_s=1.0).start()
    spec = runner.prepare(
        JobSpec(
            thresholds=[0.5],
            ns=[1, 2, 3],
            values=[10.0, 50.0],
            question_limit=6,
            known=False,
            selection_tokens=200,
            loss_tokens=loss_tokens,
            side_effect_sets=[GEO],
        )
    )
    return runner, runner.store.create(spec, engine.cache_namespace())


def when_configurations_run(job, act) -> threading.Thread:
    """A started thread that calls ``act()`` half a second into the job's configurations phase
    (when a worker is busy with a task)."""

    def wait_then_act() -> None:
        end = time.time() + 60
        while job.phase != "configurations" and time.time() < end:
            time.sleep(0.05)
        time.sleep(0.5)
        act()

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from unlearn_core.evaluation.ray_backend import start_ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("UNLEARN_OFFLINE", "1")
    start_ray(2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, shared_data) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("sweep_local")
    assert main(sweep_cli("local", out)) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert set(by_config(rows)) == KEYS
    return by_config(jsonl(next((out / "jobs").iterdir()) / "results.jsonl"))


def test_local_and_ray_give_identical_results(ray_session, local_rows, tmp_path):
    assert main(sweep_cli("ray", tmp_path)) == 0
    rows = jsonl(next((tmp_path / "jobs").iterdir()) / "results.jsonl")
    assert len(rows) == len(KEYS)
    assert by_config(rows) == local_rows
    assert any(r["loss_added"] for k, r in local_rows.items() if k != "none")  # the loss is compared too
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["backend"] == "ray"
    assert {t["key"][1] for t in out["tasks"]} == {"forget", GEO, "loss"}  # loss added ran on the workers


def test_killed_worker_loses_and_duplicates_nothing(ray_session, local_rows, tmp_path):
    runner, job = ray_job(tmp_path, loss_tokens=2100)
    pool = runner.pool
    victim = pool.infos()[0]["pid"]
    killer = when_configurations_run(job, lambda: os.kill(victim, signal.SIGKILL))
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
    cmd = [sys.executable, "-m", "unlearn_core", *sweep_cli("ray", tmp_path), "--delay-per-config", "1.0"]
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

    r = subprocess.run(cmd + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming run" in r.stderr
    rows = jsonl(path)
    keys = [x["config"] for x in rows]
    assert len(keys) == len(set(keys)) == len(KEYS) and set(keys) == KEYS
    assert rows[: len(before)] == before  # nothing persisted before the kill was recomputed
    assert by_config(rows) == local_rows
    assert json.loads((path.parent / "status.json").read_text())["status"] == "done"


def test_server_on_ray_resumes_after_a_kill(local_rows, tmp_path, shared_data):
    """`serve --tiny` with job_backend = "ray": a job posted over HTTP runs on 2 Ray workers
    (distinct pids in its task records); the server, SIGKILLed with its Ray instance mid-sweep,
    resumes the job on restart, and the rows equal the local run's, none lost or duplicated."""
    from api_helpers import small_job
    from browser_helpers import start_server, stop

    from unlearn_core.server.client import UnlearnClient

    env = {
        "UNLEARN_JOB_BACKEND": "ray",
        "UNLEARN_RAY_WORKERS": "2",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
    }
    args = ["--tiny", "--cache-dir", str(tmp_path / "cache")]
    spec = small_job(ns=[1, 2, 3], question_limit=6, loss_tokens=2100, delay_per_config=1.0)
    p, url = start_server(tmp_path / "server.log", args, timeout=900, env=env, new_session=True)
    try:
        job = UnlearnClient(url, token="").submit_job(spec)["id"]
        path = tmp_path / "cache" / "jobs" / job / "results.jsonl"
        end = time.time() + 120
        while len(jsonl(path)) < 3:  # the baseline and some configurations
            assert p.poll() is None and time.time() < end, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the server and the Ray instance it started
        p.wait(10)
    before = jsonl(path)
    assert 3 <= len(before) < len(KEYS), "the kill must land mid-sweep"

    p, url = start_server(tmp_path / "server.log", args, timeout=900, env=env, new_session=True)
    try:
        client = UnlearnClient(url, token="")
        detail = client.wait_job(job, timeout=900)
        assert detail["status"] == "done", detail.get("error")
        assert "resumed" in (detail["note"] or "")
    finally:
        stop(p)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # whatever of its Ray instance outlived it
        except ProcessLookupError:
            pass
    rows = jsonl(path)
    keys = [x["config"] for x in rows]
    assert len(keys) == len(set(keys)) == len(KEYS)
    assert rows[: len(before)] == before
    assert by_config(rows) == local_rows
    tasks = detail["tasks"]  # this run's tasks: the selections left x (2 sets + loss) x 2 shards, on both workers
    assert tasks and len({t["pid"] for t in tasks}) == 2
    assert {tuple(t["key"][1:]) for t in tasks} == {(s, k) for s in ("forget", GEO, "loss") for k in (0, 1)}


def test_questions_travel_as_checked_references(tmp_path, shared_data):
    """Tasks carry (position, id) into a named set; the worker resolves them from its own data
    directory and refuses a reference whose id is not where the driver saw it."""
    from unlearn_core.data.loaders import Question, load_question_set
    from unlearn_core.evaluation.ray_backend import EngineWorker, make_tasks, question_refs
    from unlearn_core.method.interventions import Intervention
    from unlearn_core.model.tiny import tiny_engine

    full = load_question_set(GEO, str(shared_data)).questions
    chosen = [full[4], full[1], full[7]]
    assert question_refs(full, chosen) == ((4, full[4].id), (1, full[1].id), (7, full[7].id))
    stranger = Question("x", "?", ("a", "b", "c", "d"), 0, "s", "t")
    with pytest.raises(ValueError, match="not in their set"):
        question_refs(full, [stranger])
    tasks = make_tasks({GEO: (GEO, full, chosen)}, [[[Intervention("tiny", (1,), 5.0)]]], parts=2)
    assert [t.refs for t in tasks] == [((4, full[4].id), (1, full[1].id)), ((7, full[7].id),)]
    assert "What" not in repr(tasks) and full[4].question not in repr(tasks)  # no question text on the wire

    engine = tiny_engine(cache_dir=str(tmp_path))
    engine.settings.data_dir = str(shared_data)
    worker = EngineWorker.__new__(EngineWorker)
    worker.engine, worker.sets = engine, {}
    assert worker.questions(GEO, tasks[0].refs) == [full[4], full[1]]
    with pytest.raises(ValueError, match="data directory differs"):
        worker.questions(GEO, ((4, full[5].id),))


def test_task_overheads_count_scheduling_not_queueing():
    """Hand-made timelines: a task queued behind another on its worker is charged only the gap
    between the previous task's end and its own start, plus its return trip."""
    from unlearn_core.evaluation.ray_backend import task_overheads

    recs = [  # worker 1 runs a then b (b was sent while a ran); worker 2 runs c
        {"pid": 1, "submitted": 0.0, "started": 0.01, "ended": 2.0, "received": 2.02},
        {"pid": 1, "submitted": 0.0, "started": 2.005, "ended": 4.0, "received": 4.001},
        {"pid": 2, "submitted": 1.0, "started": 1.5, "ended": 3.0, "received": 3.0},
    ]
    got = task_overheads(recs)
    assert got == pytest.approx([0.01 + 0.02, 0.005 + 0.001, 0.5 + 0.0])


def test_loss_shards_are_batch_aligned():
    """Loss windows are cut on ``mean_nll``'s batch boundaries, so each window is scored in the
    batch it would be locally, and the shards cover every window once, in order."""
    from unlearn_core.evaluation.metrics import NLL_BATCH
    from unlearn_core.evaluation.ray_backend import LossTask, LossWindows, make_tasks
    from unlearn_core.method.interventions import Intervention

    text = LossWindows("webtext", 5000, 256, "x")
    groups = [[[Intervention("tiny", (1,), 5.0)]], [[Intervention("tiny", (2,), 5.0)]]]
    for n, parts in ((9, 2), (21, 2), (21, 3), (3, 4), (40, 8)):
        tasks = make_tasks({}, groups, parts, (text, n))
        for g in range(2):
            cuts = [(t.start, t.stop) for t in tasks if isinstance(t, LossTask) and t.group == g]
            assert cuts[0][0] == 0 and cuts[-1][1] == n and len(cuts) <= parts
            assert all(a % NLL_BATCH == 0 and a < b for a, b in cuts)
            assert all(b == a2 for (_, b), (a2, _) in zip(cuts, cuts[1:]))


def test_cancel_stops_a_ray_job(ray_session, tmp_path, shared_data):
    """Cancel during the configurations phase: the job ends 'cancelled' before its last
    selection, keeping the rows it had, none twice."""
    runner, job = ray_job(tmp_path, loss_tokens=0)
    t = when_configurations_run(job, job.cancel.set)
    try:
        runner.run_job(job)
    finally:
        t.join()
        runner.close_pool()
    assert job.status == "cancelled"
    rows = jsonl(runner.store.dir(job.id) / "results.jsonl")
    keys = [r["config"] for r in rows]
    assert "none" in keys and len(keys) == len(set(keys)) and len(keys) < len(KEYS)  # stopped mid-run
