"""Ray's cost on a sweep, on the tiny backend: local vs Ray wall time and the overhead per task.

The same 8 configurations on Q questions: locally (``sweep.count_in_steps``, one process) and
on ``--workers`` Ray actors with one task per question (the smallest task a job sends: the
worst case for overhead). Overhead per task = (Ray wall x workers - the workers' own compute
time) / tasks: what scheduling, pickling and the round trip add. Worker start-up (Ray itself,
then one engine per actor) is reported apart: a job pays it once.

    OMP_NUM_THREADS=1 python bench/ray_sweep.py [--questions 24] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("UNLEARN_NO_HUB", "1")

    from unlearn_core.interventions import Intervention
    from unlearn_core.ray_backend import EngineRecipe, RayPool, Task
    from unlearn_core.server.state import fits_context, load_question_set
    from unlearn_core.sweep import count_in_steps
    from unlearn_core.tiny import tiny_engine

    engine = tiny_engine(cache_dir=tempfile.mkdtemp(prefix="ray_bench_"))
    qs = [q for q in load_question_set("wmdp-bio", engine.settings.data_dir).questions
          if fits_context(engine, q)][: args.questions]  # the tiny model's 512-token context
    configs = [[Intervention("tiny", (2, 3, 4), float(c))] for c in (5, 10, 20, 30, 40, 50, 75, 100)]

    t0 = time.perf_counter()
    local = count_in_steps(engine, qs, configs)
    local_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    pool = RayPool(EngineRecipe.of(engine), workers=args.workers).start()
    start_s = time.perf_counter() - t0
    try:
        tasks = [Task(0, "forget", i, [q], configs) for i, q in enumerate(qs)]
        results = []
        t0 = time.perf_counter()
        pool.run(tasks, lambda task, res: results.append(res))
        ray_s = time.perf_counter() - t0
    finally:
        pool.close()
    counts = [(sum(r.counts[i][0] for r in results), sum(r.counts[i][1] for r in results))
              for i in range(len(configs))]
    same = counts == [(r.correct, r.total) for r in local]
    compute = sum(r.seconds for r in results)
    overhead = (ray_s * args.workers - compute) / len(tasks)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{len(qs)} questions x {len(configs)} configurations, {len(tasks)} tasks, {args.workers} workers")
    print(f"local:            {local_s:8.2f} s")
    print(f"ray start-up:     {start_s:8.2f} s  (Ray + one engine per worker, paid once per job/server)")
    print(f"ray:              {ray_s:8.2f} s  (workers' compute {compute:.2f} s)")
    print(f"overhead / task:  {overhead * 1000:8.1f} ms")
    print(f"identical counts: {same}")


if __name__ == "__main__":
    main()
