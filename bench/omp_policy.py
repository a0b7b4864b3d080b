"""OpenMP wait policy on a shared machine: cloze scoring of quiz questions on the embedded model,
with OMP_WAIT_POLICY=ACTIVE (torch's default: idle threads spin) and PASSIVE (they sleep, what
``unlearn_core`` sets), each on a quiet machine and beside one busy process (a spinning Python
loop per core minus one, as a second test process or a server would be).

    python bench/omp_policy.py [--questions 20]

Each cell is a fresh process, since OpenMP reads the policy once when torch is imported.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import os, sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {root!r})
import torch
from unlearn_core.core.settings import load_settings
from unlearn_core.model.engine import load_engine
from unlearn_core.data import loaders as D
from unlearn_core.evaluation import mcq
e = load_engine(load_settings(), progress=False)
qs = D.load_question_set("quiz:bio", e.settings.data_dir).questions[:{n}]
mcq.score_questions(e, qs[:2])
t = time.perf_counter()
mcq.score_questions(e, qs)
print((time.perf_counter() - t) / len(qs))
"""


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def cell(policy: str, busy: bool, n: int) -> float:
    stop = mp.Event()
    n_spin = max(1, (os.cpu_count() or 2) - 1) if busy else 0
    spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(n_spin)]
    for p in spinners:
        p.start()
    try:
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        cmd = [sys.executable, "-c", CHILD.format(root=str(ROOT), n=n)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        stop.set()
        for p in spinners:
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=20)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from unlearn_core.core.devices import cpu_name

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.questions} cloze questions of quiz:bio per cell")
    print("| OMP_WAIT_POLICY | machine | seconds per question |\n| --- | --- | --- |")
    for busy in (False, True):
        for policy in ("ACTIVE", "PASSIVE"):
            s = cell(policy, busy, args.questions)
            print(f"| {policy} | {'one busy process beside it' if busy else 'quiet'} | {s:.3f} |", flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main()
