"""``attack``: the attack bench (every attack against every defence on a target's held-out facts)."""

from __future__ import annotations

from unlearn_core.cli.common import StageBars, add_command, emit, engine_of
from unlearn_core.features.default_target import DEFAULT_TARGET

DEFAULT_ATTACKS = "rephrase,fill_blank,context,few_shot,filler,generation"


def cmd_attack(args) -> None:
    """Forgotten or only hidden: recovery of each attack against each defence."""
    from unlearn_core.attacks.bench import parse_attacks, run_bench
    from unlearn_core.attacks.defences import parse_defences
    from unlearn_core.attacks.report import markdown
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.targets import engine_target

    attacks = parse_attacks(args.attacks)  # a typo fails before the model loads
    engine = engine_of(args)
    t = engine_target(engine, args.target)
    defences = parse_defences(engine, t, args.defences)
    bars = StageBars(f"attack {t.name}")
    r = run_bench(engine, t, defences, attacks, probes=args.probes, part=args.part, stage=bars.stage)
    bars.close()
    md = pages.save(r, "attack", args, args.out) if args.out else markdown(r)
    emit(args, r, md)


def add_parsers(sub) -> None:
    s = add_command(sub, "attack", cmd_attack, help="the attack bench: is the knowledge gone, or only hidden?")
    s.add_argument("--target", default=DEFAULT_TARGET)
    s.add_argument(
        "--defences",
        default="default",
        help="comma-separated: default, clamp, gated, dsg, rmu:<run>, persist:<run>, none (control)",
    )
    s.add_argument(
        "--attacks",
        default=DEFAULT_ATTACKS,
        help=f"comma-separated, from: {DEFAULT_ATTACKS} (the default), and relearn (threat 'weights': "
        "fine-tunes with the defence on, minutes per defence; rows relearn:facts and relearn:wikitext)",
    )
    s.add_argument("--probes", help="a probe file or question-set spec (default: the target's registered probes)")
    s.add_argument("--part", choices=("train", "heldout", "all"), help="forget questions' part (default: eval_part)")
    s.add_argument("--out", help="write <out>.json and <out>.md")
