"""``gate``: static vs gated clamp on a target's known questions, and the filler probe."""

from __future__ import annotations

from pathlib import Path

from unlearn_core.cli.common import StageBars, add_command, emit, engine_of, floats, progress_bar, step_progress
from unlearn_core.features.default_target import DEFAULT_TARGET


def cmd_gate(args) -> None:
    """Static vs gated clamp on a target's held-out known questions, and the filler probe."""
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.experiments import gate as GX
    from unlearn_core.evaluation.targets import engine_target

    engine = engine_of(args)
    t = engine_target(engine, args.target)
    bars = StageBars(f"gate {t.name}")
    r = GX.compare(
        engine,
        t,
        list(floats(args.clamps)),
        [int(n) for n in floats(args.ns)] if args.ns else None,
        args.percentile,
        args.loss_tokens,
        stage=bars.stage,
    )
    bars.close()
    if args.out:  # kept even if the probe fails
        pages.save(r, "gate", args, args.out)
    if args.probe_clamp:
        bar = progress_bar(None, "robustness probe")  # the total: the probe's steps, once it starts
        p = GX.probe(engine, t, args.probe_clamp, args.percentile, n=args.probe_n, progress=step_progress(bar))
        bar.close()
        r["probe"] = p
        if args.out:  # the curve as a page to open in a browser (the page names it)
            from unlearn_core.ui.figures import probe_figure

            html = Path(args.out).with_suffix(".probe.html")
            probe_figure(p["rows"], f"{t.name}: N = {p['n']}, c = {p['c']:g}, τ = {p['gate']['tau']:.3f}").write_html(
                html, include_plotlyjs=True
            )
    md = pages.save(r, "gate", args, args.out) if args.out else pages.body(r, kind="gate")
    emit(args, r, md)


def add_parsers(sub) -> None:
    s = add_command(
        sub, "gate", cmd_gate, help="static vs gated clamp on a target's known questions, and the filler probe"
    )
    s.add_argument("--target", default=DEFAULT_TARGET)
    s.add_argument("--clamps", default="25,50,100,200,400", help="clamp values c")
    s.add_argument("--ns", help="numbers of top features of the target's selection (default: its own N)")
    s.add_argument("--percentile", type=float, default=95.0, help="tau = this percentile of rho on the retain corpora")
    s.add_argument("--loss-tokens", type=int, default=10_000)
    s.add_argument("--probe-clamp", type=float, help="also run the filler probe at this c")
    s.add_argument("--probe-n", type=int, help="the probe's N (default: the target's own N)")
    s.add_argument("--out", help="write <out>.json and <out>.md")
