"""``mcq``, ``eval``, ``ppl``, ``generate``: the model with and without an intervention."""

from __future__ import annotations

from unlearn_core.cli.common import (
    add_command,
    add_intervention_args,
    add_variant_arg,
    emit,
    engine_of,
    fmt_probs,
    interventions_of,
    progress_bar,
    with_variant,
)
from unlearn_core.data import loaders as D


def cmd_mcq(args) -> None:
    from unlearn_core.evaluation.mcq import score_question

    engine = engine_of(args)
    qs = D.load_question_set(args.questions, engine.settings.data_dir)
    if args.question_id:
        matches = [q for q in qs.questions if q.id == args.question_id]
        if not matches:
            raise SystemExit(f"no question with id {args.question_id!r} in {qs.name}")
        q = matches[0]
    else:
        if not 0 <= args.index < len(qs.questions):
            raise SystemExit(f"--index must be in [0, {len(qs.questions) - 1}]")
        q = qs.questions[args.index]
    ivs = interventions_of(args, engine)
    got = with_variant(args, engine, ivs, lambda iv: score_question(engine, q, iv))
    inter = got.get("intervened")
    obj = {
        "question": q.to_dict(),
        "set": qs.label,
        "scoring": engine.scoring,
        "base": got["base"].to_dict(),
        "interventions": [iv.__dict__ for iv in ivs],
        "intervened": inter.to_dict() if inter else None,
    }
    if args.variant:
        obj["variant"] = {"name": args.variant, **got[args.variant].to_dict()}
    text = [f"[{qs.label}] {q.id}", q.question] + [f"  {L}. {c}" for L, c in zip(D.LETTERS, q.choices)]
    text += [f"correct: {D.LETTERS[q.answer]}   scoring: {engine.scoring}"]
    for name, sc in got.items():
        what = (
            f"   ({'; '.join(iv.label() for iv in ivs)}{' on ' + args.variant if args.variant else ''})"
            if name == "intervened"
            else ""
        )
        text.append(f"{name:<10}: {fmt_probs(sc.probs)}  -> {D.LETTERS[sc.predicted]}{what}")
    emit(args, obj, "\n".join(text))


def cmd_eval(args) -> None:
    from unlearn_core.evaluation.mcq import accuracy, all_orderings, known_questions, score_questions
    from unlearn_core.evaluation.metrics import loss_added

    engine = engine_of(args)
    ivs = interventions_of(args, engine)
    result: dict = {
        "scoring": engine.scoring,
        "prompt_format": engine.prompt_format,
        "interventions": [iv.__dict__ for iv in ivs],
        "sets": {},
    }
    lines = []
    for spec in args.questions:
        qs = D.load_question_set(spec, engine.settings.data_dir)
        questions = qs.questions[: args.limit] if args.limit else qs.questions
        if args.known:
            bar = progress_bar(len(questions), f"known filter {qs.name}")
            questions = known_questions(engine, questions, progress=bar.update, strict=args.strict)
            bar.close()
        expand = engine.scoring == "letter" and args.orderings
        items = [v for q in questions for v in all_orderings(q)] if expand else questions
        bar = progress_bar(len(items) * (2 if ivs else 1), f"scoring {qs.name}")
        base = accuracy(score_questions(engine, items, progress=bar.update))
        inter = accuracy(score_questions(engine, items, ivs, progress=bar.update)) if ivs else None
        bar.close()
        known_filter = ("strict" if args.strict else True) if args.known else False
        result["sets"][spec] = {
            "label": qs.label,
            "is_fallback": qs.is_fallback,
            "n_questions": len(questions),
            "n_scored": len(items),
            "known_filter": known_filter,
            "base_accuracy": base,
            "intervened_accuracy": inter,
        }
        lines.append(
            f"{qs.label:<40} n={len(questions):<5} base={base:.3f}"
            + (f"  intervened={inter:.3f}" if inter is not None else "")
        )
    if args.loss_tokens and ivs:
        docs = D.load_corpus(args.loss_corpus, engine.settings.data_dir)
        bar = progress_bar(args.loss_tokens * 2, f"loss added on {args.loss_corpus}")
        la = loss_added(engine, docs, ivs, n_tokens=args.loss_tokens, corpus=args.loss_corpus, progress=bar.update)
        bar.close()
        result["loss_added"] = la.to_dict()
        lines.append(
            f"loss added on {args.loss_corpus} ({la.n_tokens} tokens): {la.loss_added:+.4f} "
            f"(clean {la.clean_loss:.4f}, intervened {la.intervened_loss:.4f})"
        )
    emit(args, result, "\n".join(lines))


def cmd_ppl(args) -> None:
    from unlearn_core.evaluation.metrics import perplexity

    engine = engine_of(args)
    ivs = interventions_of(args, engine)
    docs = D.load_corpus(args.corpus, engine.settings.data_dir, part=args.part)

    def run(iv):
        bar = progress_bar(args.tokens, "perplexity")
        r = perplexity(engine, docs, iv, n_tokens=args.tokens, ctx=args.ctx, progress=bar.update)
        bar.close()
        return r

    out = with_variant(args, engine, ivs, run)
    emit(
        args,
        {"corpus": args.corpus, **out},
        "\n".join(
            f"{k:<10} ppl={v['perplexity']:.3f} over {v['n_tokens']} tokens (ctx {v['ctx']})" for k, v in out.items()
        ),
    )


def cmd_generate(args) -> None:
    from unlearn_core.evaluation.metrics import generate

    engine = engine_of(args)
    ivs = interventions_of(args, engine)
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    out = {"prompt": args.prompt, **with_variant(args, engine, ivs, lambda iv: generate(engine, args.prompt, iv, **kw))}
    emit(args, out, "\n".join(f"--- {k}\n{v}" for k, v in out.items()))


def add_parsers(sub) -> None:
    s = add_command(sub, "mcq", cmd_mcq, help="one question: probabilities with and without an intervention")
    add_intervention_args(s)
    s.add_argument(
        "--questions",
        default="wmdp-bio",
        help="wmdp-bio | mmlu:<subject,...> | mmlu:side-effects | quiz:<bio|sherlock|retain> | a .json/.csv file",
    )
    s.add_argument("--index", type=int, default=0)
    s.add_argument("--question-id")
    add_variant_arg(s)

    s = add_command(sub, "eval", cmd_eval, help="accuracy on question sets (known filter), loss added")
    add_intervention_args(s)
    s.add_argument(
        "--questions",
        nargs="+",
        default=["wmdp-bio", "mmlu:side-effects"],
        help="question sets: wmdp-bio, mmlu:<subjects>, quiz:<name>, a .json/.csv file; @train/@heldout, !flag",
    )
    s.add_argument("--limit", type=int, default=0, help="first N questions of each set (0 = all)")
    s.add_argument("--known", action="store_true", help="keep only questions the clean model knows")
    s.add_argument(
        "--strict",
        action="store_true",
        help="with --known: also drop questions answered correctly with the question text removed",
    )
    s.add_argument("--orderings", action="store_true", help="letter scoring: score all 24 orderings")
    s.add_argument("--loss-corpus", default="webtext")
    s.add_argument("--loss-tokens", type=int, default=50_000, help="0 disables loss added")

    s = add_command(sub, "ppl", cmd_ppl, help="perplexity of a corpus with and without an intervention")
    add_intervention_args(s)
    s.add_argument("--corpus", default="wikitext", help="webtext | wikitext | sherlock | pile | wmdp-bio-text | path")
    s.add_argument("--part", default="all", choices=["all", "train", "heldout"])
    s.add_argument("--tokens", type=int, default=20_000)
    s.add_argument("--ctx", type=int, default=256)
    add_variant_arg(s)

    s = add_command(sub, "generate", cmd_generate, help="base vs intervened generation")
    add_intervention_args(s)
    s.add_argument("--prompt", required=True)
    s.add_argument("--max-new-tokens", type=int, default=40)
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    add_variant_arg(s)
