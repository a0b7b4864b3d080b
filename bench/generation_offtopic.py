"""Where "off-topic" starts: the clean model's mean NLL per token of a continuation after a quiz
prompt, for its own greedy answer (on topic) and for another question's answer (off topic by
construction), on the train half of the bio and retain quizzes. Prints both distributions and
the threshold that best separates them (generation_check.OFF_TOPIC_NLL is set from it), then
what the default clamp's continuations score.

    .venv/bin/python bench/generation_offtopic.py [--questions 40]
"""

from __future__ import annotations

import statistics

from common import load, machine, parser


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--questions", type=int, default=40)
    args = p.parse_args()
    engine, _ = load(args)
    from unlearn_core.data import loaders as D
    from unlearn_core.evaluation import generation_check as GC
    from unlearn_core.evaluation.mcq import known_questions
    from unlearn_core.evaluation.metrics import generate
    from unlearn_core.evaluation.targets import default_intervention, engine_target

    qs = []
    for spec in ("quiz:bio@train", "quiz:retain@train"):
        qs += known_questions(engine, D.load_question_set(spec, engine.settings.data_dir).questions, strict=True)
    qs = qs[: args.questions]
    prompts = [GC.fact_prompt(q) for q in qs]
    answers = [generate(engine, pr, None, max_new_tokens=GC.NEW_TOKENS) for pr in prompts]
    own = [GC.continuation_nll(engine, pr, a) for pr, a in zip(prompts, answers)]
    other = [GC.continuation_nll(engine, pr, answers[(i + 7) % len(qs)]) for i, pr in enumerate(prompts)]
    cuts = sorted(set(round(x, 2) for x in own + other))
    best = max(cuts, key=lambda t: sum(x <= t for x in own) + sum(x > t for x in other))
    acc = (sum(x <= best for x in own) + sum(x > best for x in other)) / (2 * len(qs))
    iv = default_intervention(engine, engine_target(engine, "bio-basics"))
    clamped = [generate(engine, pr, [iv], max_new_tokens=GC.NEW_TOKENS) for pr in prompts[:10]]
    cl = [GC.continuation_nll(engine, pr, c) for pr, c in zip(prompts, clamped)]
    print(f"machine: {machine()}; {len(qs)} known train-half questions (bio, retain)")
    for name, xs in (("own answer (on topic)", own), ("another question's answer", other), ("default clamp", cl)):
        print(f"{name:<28} median {statistics.median(xs):.2f}  min {min(xs):.2f}  max {max(xs):.2f}")
    print(f"best split: NLL > {best:.2f} nats/token is off topic ({acc:.0%} of the {2 * len(qs)} right)")
    for pr, c, x in zip(prompts[:10], clamped, cl):
        print(f"  {x:5.2f}  {pr.splitlines()[0][10:70]!r} -> {c.strip()[:60]!r}")


if __name__ == "__main__":
    main()
