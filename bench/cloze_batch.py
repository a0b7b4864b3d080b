"""Cloze scoring, one question per forward vs several: seconds per question and the largest
difference in the scores, on the clean model and under the bio-basics default clamp and a gated
clamp on its features (the gate counts each row's own question prefix).

    python bench/cloze_batch.py [--questions 48] [--batches 1,4,8,16]

Why batching pays on a CPU: one question's answer tokens need one pass over the 262k x 640
unembedding (671 MB in fp32), which costs more than its blocks; a batch shares that pass.
"""

from __future__ import annotations

import time

from common import load, machine, parser


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--questions", type=int, default=48)
    p.add_argument("--batches", default="1,4,8,16")
    args = p.parse_args()
    eng, _ = load(args)
    from dataclasses import replace

    from unlearn_core.data import loaders as D
    from unlearn_core.evaluation import mcq
    from unlearn_core.evaluation.targets import default_intervention, get_target

    qs = D.load_question_set("quiz:bio", eng.settings.data_dir).questions[: args.questions]
    clamp = default_intervention(eng, get_target("bio-basics"))
    gated = replace(clamp, mode="gated", gate=0.05)
    print(machine())
    print(f"{len(qs)} questions of quiz:bio; each cell: seconds per question (max |difference| vs batch 1)")
    print("| batch | clean | clamp | gated |\n| --- | --- | --- | --- |")
    ref: dict[str, list] = {}
    mcq.cloze_logliks_batch(eng, qs[:2])  # warm up
    for b in [int(x) for x in args.batches.split(",")]:
        cells = []
        for name, ivs in (("clean", None), ("clamp", [clamp]), ("gated", [gated])):
            hooks = eng.hooks(ivs)
            t = time.perf_counter()
            out = [ll for s in range(0, len(qs), b) for ll in mcq.cloze_logliks_batch(eng, qs[s : s + b], hooks)]
            dt = (time.perf_counter() - t) / len(qs)
            ref.setdefault(name, out)
            diff = max(float((x - y).abs().max()) for x, y in zip(out, ref[name]))
            cells.append(f"{dt:.3f} s ({diff:.1e})")
        print(f"| {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
