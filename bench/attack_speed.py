"""The attack bench's two hot paths, old against new, on the embedded model and bio-basics' own
inputs (the known held-out forget questions, the retain shots, the generation probes):

1. cloze scoring per question: the row path (``mcq.cloze_logliks_batch``, 8 questions a batch,
   each choice a row repeating the prefix) against the cached path (``cloze_cached``: the prefix
   once), for plain questions, context probes, filler (64 tokens) and few-shot k = 1, 3, 8, clean
   and under the gated clamp (which decides per prompt). It prints the prefix length, seconds per
   question of each and the largest difference of the log-likelihoods: the crossover sets
   ``cloze_cached.CACHE_FROM``. The last column scores the cached path one question a call (as
   a server hold of one long prompt would), for the cost of that choice (``attacks.holds``).
2. greedy generation of the generation probes (12 tokens, as the bench): one prompt at a time
   (``metrics.generate``) against ``generate_batch.generate_greedy``, clean and under the default
   clamp, and whether every text is the same.

    python bench/attack_speed.py [--questions 8] [--repeats 2] [--probes 0 (all)] [--parts cloze,generation]

Old and new alternate in the same run (cloze: the best of ``--repeats``), so a machine shared
with other work slows both alike.
"""

from __future__ import annotations

import statistics
import time

from common import load, machine, parser


def per_question(fn, qs, repeats: int, batch: int = 8) -> tuple[float, list]:
    """Seconds per question (the fastest of ``repeats`` runs: a shared machine only slows)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = [ll for s in range(0, len(qs), batch) for ll in fn(qs[s : s + batch])]
        best = min(best, (time.perf_counter() - t) / len(qs))
    return best, out


def cloze_table(eng, inputs, ivs: dict, n: int, repeats: int) -> None:
    from unlearn_core.attacks import transforms as TR
    from unlearn_core.attacks.bench import filler_text
    from unlearn_core.data.probes import by_kind
    from unlearn_core.evaluation import cloze_cached as CC
    from unlearn_core.evaluation import mcq

    base = inputs.forget[:n]
    known = {q.id for q in inputs.forget}
    forms = {"plain": base}
    forms["context probe"] = [lp.probe for lp in by_kind(inputs.probes, "context") if lp.source.id in known][:n]
    forms["filler"] = [TR.with_filler(q, filler_text(eng)) for q in base]
    forms.update({f"few_shot:{k}": [TR.few_shot(q, inputs.shots[:k]) for q in base] for k in (1, 3, 8)})
    tok = eng.model.tokenizer
    print(f"\n{len(base)} questions per form; seconds per question (8 a batch, best of {repeats}), old -> new")
    head = ("form", "prefix tokens (median)", "defence", "row path", "cached path", "speed-up", "max abs diff")
    print("| " + " | ".join(head) + " | cached, 1 a batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    mcq.cloze_logliks_batch(eng, base[:2])  # warm up
    for form, qs in forms.items():
        plen = statistics.median(len(mcq.cloze_rows(tok, q)[0]) for q in qs)
        for name, iv in ivs.items():
            hooks = eng.hooks(iv)
            old_s, old = per_question(lambda b, h=hooks: mcq.cloze_logliks_batch(eng, b, h), qs, repeats)
            rows = [mcq.cloze_rows(tok, q) for q in qs]
            new_s, new = per_question(lambda b, iv=iv: CC.cached_logliks(eng, b, iv), rows, repeats)
            one_s, _ = per_question(lambda b, iv=iv: CC.cached_logliks(eng, b, iv), rows, repeats, batch=1)
            diff = max(float((a - b).abs().max()) for a, b in zip(old, new))
            same = all(int(a.argmax()) == int(b.argmax()) for a, b in zip(old, new))
            print(
                f"| {form} | {plen:.0f} | {name} | {old_s:.3f} s | {new_s:.3f} s | {old_s / new_s:.2f}x "
                f"| {diff:.1e}{'' if same else ' (an answer changed!)'} | {one_s:.3f} s |"
            )


def generation_table(eng, inputs, ivs: dict, n: int) -> None:
    from unlearn_core.data.probes import by_kind
    from unlearn_core.evaluation.generate_batch import generate_greedy
    from unlearn_core.evaluation.generation_check import NEW_TOKENS
    from unlearn_core.evaluation.metrics import generate

    known = {q.id for q in inputs.forget}
    prompts = [lp.probe.question for lp in by_kind(inputs.probes, "generation") if lp.source.id in known]
    prompts = prompts[:n] if n else prompts
    from unlearn_core.attacks.bench import GEN_STEP

    print(f"\n{len(prompts)} generation probes, {NEW_TOKENS} new tokens each; seconds for all")
    print(f"| defence | one at a time | batches of {GEN_STEP} (the bench) | one batch | texts equal |")
    print("| --- | --- | --- | --- | --- |")
    for name, iv in ivs.items():
        t = time.perf_counter()
        single = [generate(eng, p, iv, max_new_tokens=NEW_TOKENS) for p in prompts]
        t1 = time.perf_counter()
        step = [
            x
            for s in range(0, len(prompts), GEN_STEP)
            for x in generate_greedy(eng, prompts[s : s + GEN_STEP], iv, NEW_TOKENS)
        ]
        t2 = time.perf_counter()
        batch = generate_greedy(eng, prompts, iv, max_new_tokens=NEW_TOKENS)
        t3 = time.perf_counter()
        same = sum(a == b == c for a, b, c in zip(single, step, batch))
        print(f"| {name} | {t1 - t:.1f} s | {t2 - t1:.1f} s | {t3 - t2:.1f} s | {same}/{len(prompts)} |")
        for p, a, b, c in zip(prompts, single, step, batch):
            if not a == b == c:
                print(f"  differs: {p!r}: {a!r} / {b!r} / {c!r}")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--probes", type=int, default=0, help="generation probes (0: all known)")
    p.add_argument("--parts", default="cloze,generation")
    p.set_defaults(repeats=2)
    args = p.parse_args()
    eng, load_s = load(args)
    from unlearn_core.attacks.bench import load_inputs
    from unlearn_core.attacks.defences import parse_defences
    from unlearn_core.evaluation.targets import get_target

    target = get_target("bio-basics")
    inputs = load_inputs(eng, target, None)
    defences = {d.name: list(d.interventions) for d in parse_defences(eng, target, "clamp,gated")}
    print(machine(), f"; engine loaded in {load_s:.0f} s")
    if "cloze" in args.parts:
        cloze_table(eng, inputs, {"none": None, "gated": defences["gated"]}, args.questions, args.repeats)
    if "generation" in args.parts:
        generation_table(eng, inputs, {"none": None, "clamp": defences["clamp"]}, args.probes)


if __name__ == "__main__":
    main()
