"""``target list|eval``: the unlearning targets, and a target's default intervention scored."""

from __future__ import annotations

from unlearn_core.cli.common import StageBars, add_command, emit, engine_of, settings_of


def cmd_target_list(args) -> None:
    from unlearn_core.evaluation.targets import load_targets, saved_targets_dir

    s = settings_of(args)
    ts = load_targets(s.targets_file, saved_targets_dir(s))
    out = [t.to_dict() for t in ts.values()]
    lines = [
        f"{t.name:<12} [{t.source}] {t.description}\n{'':<13}forget: {t.forget_corpus} / {t.forget_questions}; "
        f"retain: {', '.join(t.retain_corpora)} / {', '.join(t.retain_questions)}; default: {t.intervention.mode} "
        f"N={t.selection.n} c={t.intervention.c:g}"
        for t in ts.values()
    ]
    emit(args, out, "\n".join(lines))


def cmd_target_eval(args) -> None:
    from unlearn_core.evaluation.target_eval import evaluate_target, known_filter_total
    from unlearn_core.evaluation.targets import engine_target

    engine = engine_of(args)
    t = engine_target(engine, args.name)
    bars = StageBars(f"target {t.name}")
    known = bars.stage(
        "known filter (questions)", known_filter_total(engine, t, args.forget_questions, args.retain_questions)
    )

    r = evaluate_target(
        engine,
        t,
        args.forget_questions,
        args.retain_questions,
        loss_tokens=args.loss_tokens,
        progress=lambda n=1: known(n),
        stage=bars.stage,
    )
    bars.close()
    obj = {k: r[k] for k in ("target", "intervention", "forget", "retain", "loss_added")}
    obj["details"] = {k: v for k, v in r.items() if k not in obj}

    def line(name, d):
        if d["n_known"] == 0:
            return f"{name:<8} {d['questions']}: {d['n_known']} of {d['n_questions']} known: nothing to score"
        return (
            f"{name:<8} {d['questions']}: {d['n_known']} of {d['n_questions']} known; accuracy "
            f"{d['base_accuracy']:.3f} -> {d['intervened_accuracy']:.3f}"
        )

    iv = r["intervention"]
    lines = [
        f"target {t.name}: {iv['mode']} {len(iv['features'])} features, c = {iv['c']:g} ({r['scoring']} scoring, "
        f"{'strict ' if r['strict_known'] else ''}known questions)",
        line("forget", r["forget"]),
    ]
    lines += [line("retain", d) for d in r["retain_sets"]]
    if r["loss_added"] is not None:
        lines.append(f"loss added on {r['loss_corpus']} ({r['loss_tokens']} tokens): {r['loss_added']:+.4f} nats")
    emit(args, obj, "\n".join(lines))


def add_parsers(sub) -> None:
    s = sub.add_parser("target", help="unlearning targets: list them, evaluate a default intervention")
    tsub = s.add_subparsers(dest="tcmd", required=True)
    t = add_command(tsub, "list", cmd_target_list, help="built-in and user targets")
    t = add_command(
        tsub, "eval", cmd_target_eval, help="apply a target's default intervention; accuracy on known questions"
    )
    t.add_argument("name")
    t.add_argument("--forget-questions", help="a question file (.json WMDP schema or .csv) instead of the target's")
    t.add_argument("--retain-questions", action="append", help="a question file (repeatable) instead of the target's")
    t.add_argument("--loss-tokens", type=int, default=20_000, help="tokens of loss added (0 skips it)")
    t.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
