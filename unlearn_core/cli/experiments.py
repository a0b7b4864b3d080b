"""``experiment wmdp|book|targets``: the write-ups' experiments and the targets sweep."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unlearn_core.cli.common import add_command, emit, engine_of, floats, settings_of
from unlearn_core.features.default_target import DEFAULT_TARGET


def cmd_experiment(args) -> None:
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.experiments import writeups as X

    if args.which == "targets" and (args.render_only or args.merge):
        return _experiment_targets(args, None)
    engine = engine_of(args)
    if args.which == "targets":
        return _experiment_targets(args, engine)
    if args.which == "wmdp":
        r = X.wmdp_experiment(
            engine,
            args.on,
            stats_tokens=args.stats_tokens,
            ppl_tokens=args.ppl_tokens,
            loss_tokens=args.ppl_tokens,
            mmlu_limit=args.mmlu_limit,
            wmdp_limit=args.wmdp_limit,
        )
        kind = "wmdp"
    else:
        r = _book(args, engine)
        kind = "book"
    md = pages.save(r, kind, args, args.out) if args.out else pages.body(r, kind=kind)
    emit(args, r, md)


def _book(args, engine) -> dict:
    """The book experiment: on the paper's selection, or (``--target``) with the study's design on
    that target's default intervention."""
    from unlearn_core.evaluation.experiments import writeups as X

    if not args.target:
        return X.book_experiment(engine, args.on, stats_tokens=args.stats_tokens, ppl_tokens=args.ppl_tokens)
    from unlearn_core.evaluation.targets import default_intervention, engine_target

    t = engine_target(engine, args.target[0])
    iv = default_intervention(engine, t)
    return X.book_experiment(
        engine,
        iv.sae_key,
        features=iv.features,
        c=iv.c,
        ppl_tokens=args.ppl_tokens,
        prompt=t.demo_prompt or "Sherlock Holmes took his bottle from the corner of the",
    )


def _experiment_targets(args, engine) -> None:
    """Per target: the sweep (choose on the train half, report the held-out half)."""
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.experiments import sweep_report as SWR
    from unlearn_core.evaluation.experiments import target_sweep as TX
    from unlearn_core.evaluation.targets import get_target, saved_targets_dir

    settings = settings_of(args)
    out = {}
    for name in args.target or [DEFAULT_TARGET, "sherlock"]:
        t = get_target(name, settings.targets_file, saved_targets_dir(settings))
        if args.merge:  # saved sweeps of this target as one, the rule applied to all their rows
            r = TX.merge([json.loads(Path(f).read_text()) for f in args.merge.split(",")])
            TX.mark_shipped(r["rows"], t)
        elif args.render_only:  # the saved sweep, re-marked against the registry as it is now
            r = json.loads((Path(args.out) / f"targets_{name}.json").read_text())
            TX.mark_shipped(r["rows"], t)
        else:
            r = TX.run(
                engine,
                t,
                thresholds=floats(args.thresholds),
                ns=tuple(int(x) for x in floats(args.ns)),
                values=floats(args.values),
                loss_tokens=args.loss_tokens,
                ppl_tokens=args.ppl_tokens,
                min_retain=args.min_retain,
                max_loss=args.max_loss,
                variants=tuple(args.variants.split(",")) if args.variants else None,
            )
        md = SWR.markdown(r)
        if args.out:  # a re-render keeps the provenance of the run it re-renders
            pages.save(r, "targets sweep", args, f"{args.out.rstrip('/')}/targets_{name}", not args.render_only)
        out[name] = r
        print(md + "\n")
    if args.json:
        print(json.dumps(out, indent=2))


def _max_loss(text: str) -> float | None:
    """--max-loss (an argparse type, so a bad value fails before the model loads): nats, or 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of nats or 'none', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def add_parsers(sub) -> None:
    s = add_command(
        sub,
        "experiment",
        cmd_experiment,
        help="the write-ups' experiments (wmdp | book) and the targets sweep (targets)",
    )
    s.add_argument("which", choices=["wmdp", "book", "targets"])
    s.add_argument(
        "--target",
        action="append",
        help="targets: which (repeatable; default bio-basics and sherlock); book: use this target's "
        "default intervention instead of the paper's selection",
    )
    s.add_argument("--thresholds", default="0.01", help="targets: retain thresholds, e.g. '0.01,0.003'")
    s.add_argument("--ns", default="20,50,100", help="targets: numbers of features")
    s.add_argument("--values", default="100,200,400", help="targets: clamp values c")
    s.add_argument("--loss-tokens", type=int, default=1500, help="targets: WebText tokens of loss added per row")
    s.add_argument(
        "--min-retain",
        type=float,
        default=0.95,
        help="targets: pooled retain accuracy (the target's choice_retain sets, train half) the default must keep",
    )
    s.add_argument(
        "--max-loss",
        type=_max_loss,
        default=0.05,
        help="targets: the choice's budget, in nats of loss added on WebText's train split, or 'none'",
    )
    s.add_argument(
        "--variants",
        help="targets: selections swept, comma-separated, of paper, format-matched, attribution, fisher, search "
        "(default all that apply)",
    )
    s.add_argument(
        "--merge",
        help="targets: saved sweeps of one --target (comma-separated JSON files) as one table, the rule "
        "applied to all their rows (written to --out)",
    )
    s.add_argument(
        "--render-only",
        action="store_true",
        help="targets: re-write the markdown of a saved sweep (--out) against the registry as it is now",
    )
    s.add_argument("--stats-tokens", type=int, default=100_000)
    s.add_argument("--ppl-tokens", type=int, default=4000)
    s.add_argument("--mmlu-limit", type=int, default=100, help="first N questions of each side-effect subject")
    s.add_argument("--wmdp-limit", type=int, default=0, help="first N held-out WMDP-bio questions (0 = all 255)")
    s.add_argument("--out", help="write <out>.json and <out>.md (targets: a folder, one pair per target)")
    s.add_argument("--on")
