"""Ray's cost and what it buys: the same sweep locally and on Ray workers.

Default (the embedded model): ``python -m unlearn_core sweep`` on a target, once with
``--backend local`` and once with ``--backend ray --workers W`` (default shard size: each
question set cut into W shards), sharing one cache directory (the second run's setup reads the
first's cached statistics, so compare the configurations phases). It reports:
  - whether every configuration's row is identical (all fields but the wall time);
  - both wall times: in all, the setup and the configurations phase;
  - Ray's overhead per task (``ray_backend.task_overheads``: scheduling, pickling, round trip;
    not queueing) and as a share of the task's own compute time;
  - the speed-up to expect from G workers (GPUs): the measured per-question compute of each
    (selection, set) list-scheduled over G workers with G shards per set, plus the measured
    overhead, with the driver's setup kept serial.

``--tiny``: the tiny test backend with one task per question (the smallest task: the worst case
for overhead), no setup.

    python bench/ray_sweep.py [--target bio-basics] [--limit 40] [--workers 2]
    OMP_NUM_THREADS=1 python bench/ray_sweep.py --tiny [--limit 24]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_name  # noqa: E402
from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402


def by_config(rows: list[dict]) -> dict[str, dict]:
    return {r["config"]: {k: v for k, v in r.items() if k != "seconds"} for r in rows}


def makespan(durations: list[float], workers: int) -> float:
    """Tasks in submission order, each to the worker that frees first (what ``RayPool.run`` does)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def estimate(tasks: list[dict], setup_s: float, overhead_s: float, gs: tuple[int, ...]) -> list[tuple]:
    """(G, configurations phase s, whole job s, speed-ups) from the measured per-question compute."""
    from collections import defaultdict

    per_q: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    for t in tasks:  # key = [selection, set, shard]
        acc = per_q[(t["key"][0], t["key"][1])]
        acc[0] += t["seconds"]
        acc[1] += t["questions"]
    out = []
    for g in gs:
        durations = []
        for (sel, name), (secs, n) in per_q.items():
            size = -(-n // g)  # the default: g shards per set
            for k in range(0, n, size):
                durations.append(secs / n * min(size, n - k) + overhead_s)
        out.append((g, makespan(durations, g), setup_s + makespan(durations, g)))
    base_c, base_j = out[0][1], out[0][2]
    return [(g, c, j, base_c / c, base_j / j) for g, c, j in out]


def sweep(args, backend: str, out: Path, cache: Path) -> dict:
    from unlearn_core.cli import main

    cmd = [
        "sweep",
        "--backend",
        backend,
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--json",
        "--thresholds",
        args.thresholds,
        "--n",
        args.n,
        "--clamps",
        args.clamps,
    ]
    if backend == "ray":
        cmd += ["--workers", str(args.workers)]
    cmd += (
        ["--tiny", "--limit", str(args.limit), "--all-questions"]
        if args.tiny
        else ["--target", args.target, "--limit", str(args.limit)]
    )
    t0 = time.perf_counter()
    assert main(cmd) == 0
    obj = json.loads((out / "results.json").read_text())
    obj["wall_s"] = time.perf_counter() - t0
    return obj


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="the tiny backend, one task per question")
    p.add_argument("--target", default=DEFAULT_TARGET)
    p.add_argument("--limit", type=int, default=40, help="questions per set (before the known filter)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--thresholds", default="0.01")
    p.add_argument("--n", default="20,50")
    p.add_argument("--clamps", default="50,100,200,400")
    p.add_argument("--cache-dir", help="default: a fresh temporary folder")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("UNLEARN_NO_HUB", "1")
    if args.tiny:
        tiny(args)
        return
    from unlearn_core.evaluation.ray_backend import task_overheads

    work = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    local = sweep(args, "local", work / "local", cache)
    ray = sweep(args, "ray", work / "ray", cache)
    same = by_config(local["results"]) == by_config(ray["results"])
    tasks = ray["tasks"]
    over = task_overheads(tasks)
    share = [o / t["seconds"] for o, t in zip(over, tasks)]
    import torch

    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads "
        f"locally, 1 per Ray worker)"
    )
    print(
        f"sweep: target {args.target}, --limit {args.limit}, thresholds {args.thresholds}, n {args.n}, "
        f"clamps {args.clamps}: {len(local['results'])} rows; {len(tasks)} Ray tasks on {args.workers} workers"
    )
    print(f"identical rows (all fields but the wall time): {same}")
    print("| run | in all | setup | configurations phase |\n| --- | --- | --- | --- |")
    for name, r in (("local", local), (f"ray --workers {args.workers}", ray)):
        print(f"| {name} | {r['wall_s']:.1f} s | {r['setup_s']:.1f} s | {r['configurations_s']:.1f} s |")
    secs = [t["seconds"] for t in tasks]
    print(
        f"task compute: median {statistics.median(secs):.2f} s (min {min(secs):.2f}, max {max(secs):.2f}), "
        f"{statistics.median(t['questions'] for t in tasks):.0f} questions per task (median)"
    )
    print(
        f"Ray overhead per task: median {statistics.median(over) * 1000:.1f} ms, max {max(over) * 1000:.1f} ms; "
        f"share of the task's compute: median {statistics.median(share):.2%}, max {max(share):.2%}"
    )
    print("\nestimated speed-up on G workers (GPUs), G shards per set, setup serial in the driver:")
    print("| G | configurations phase | speed-up | whole job | speed-up |\n| --- | --- | --- | --- | --- |")
    for g, c, j, sc, sj in estimate(tasks, local["setup_s"], statistics.mean(over), (1, 2, 4, 8)):
        print(f"| {g} | {c:.1f} s | {sc:.2f}x | {j:.1f} s | {sj:.2f}x |")
    print(f"(setup: the local run's {local['setup_s']:.1f} s, done in the driver whatever the backend)")


def tiny(args) -> None:
    """The tiny backend, one task per question: Ray's overhead at its worst."""
    from unlearn_core.evaluation.ray_backend import EngineRecipe, RayPool, make_tasks, task_overheads
    from unlearn_core.evaluation.sweep import count_in_steps
    from unlearn_core.method.interventions import Intervention
    from unlearn_core.model.tiny import tiny_engine
    from unlearn_core.server.access import load_question_set
    from unlearn_core.server.steps import fits_context

    engine = tiny_engine(cache_dir=tempfile.mkdtemp(prefix="ray_bench_"))
    full = load_question_set("wmdp-bio", engine.settings.data_dir).questions
    qs = [q for q in full if fits_context(engine, q)][: args.limit]  # the tiny model's 512-token context
    configs = [[Intervention("tiny", (2, 3, 4), float(c))] for c in (5, 10, 20, 30, 40, 50, 75, 100)]

    t0 = time.perf_counter()
    local = count_in_steps(engine, qs, configs)
    local_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    pool = RayPool(EngineRecipe.of(engine), workers=args.workers).start()
    start_s = time.perf_counter() - t0
    try:
        tasks = make_tasks({"forget": ("wmdp-bio", full, qs)}, [configs], parts=len(qs))
        results = []
        t0 = time.perf_counter()
        pool.run(tasks, lambda task, res: results.append(res))
        ray_s = time.perf_counter() - t0
    finally:
        pool.close()
    counts = [(sum(r.counts[i][0] for r in results), sum(r.counts[i][1] for r in results)) for i in range(len(configs))]
    over = task_overheads([r.record() for r in results])
    compute = sum(r.seconds for r in results)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{len(qs)} questions x {len(configs)} configurations, {len(tasks)} tasks, {args.workers} workers")
    print(f"local:            {local_s:8.2f} s")
    print(f"ray start-up:     {start_s:8.2f} s  (Ray + one engine per worker, paid once per job/server)")
    print(f"ray:              {ray_s:8.2f} s  (workers' compute {compute:.2f} s)")
    print(
        f"overhead / task:  {statistics.median(over) * 1000:8.1f} ms median, "
        f"{statistics.median(o / r.seconds for o, r in zip(over, results)):.1%} of a task's compute"
    )
    print(f"identical counts: {counts == [(r.correct, r.total) for r in local]}")


if __name__ == "__main__":
    main()
