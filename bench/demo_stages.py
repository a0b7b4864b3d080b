"""Where the guided demo's time goes: the default intervention (selection, gate calibration), the
scan for a forgotten and a kept question, and the free-text check, each timed on the embedded
model in this process (the engine loaded first, not counted). Run twice: the second run is what a
person waits for after the first run's setup (statistics and caches on disk).

    python bench/demo_stages.py [--target bio-basics] [--runs 2]
"""

from __future__ import annotations

import time

from common import load, machine, parser

from unlearn_core.evaluation import demo
from unlearn_core.evaluation.targets import default_intervention, engine_target


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--target", default="bio-basics")
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()
    engine, load_s = load(args)
    print(machine())
    print(f"engine loaded in {load_s:.1f} s\n")
    print("| run | intervention | scan (forget, retain) | questions checked | free text | total |")
    print("| --- | --- | --- | --- | --- | --- |")
    target = engine_target(engine, args.target)
    for run in range(1, args.runs + 1):
        t0 = time.perf_counter()
        iv = default_intervention(engine, target)
        t1 = time.perf_counter()
        found = demo.find_examples(engine, target, iv)
        t2 = time.perf_counter()
        gen = demo.generation(engine, target, iv)
        t3 = time.perf_counter()
        n = f"{found['n_checked_forget']} + {found['n_checked_retain']}"
        print(
            f"| {run} | {t1 - t0:.1f} s | {t2 - t1:.1f} s | {n} | {t3 - t2:.1f} s "
            f"({'none' if gen is None else gen['verdict']}) | {t3 - t0:.1f} s |"
        )


if __name__ == "__main__":
    main()
