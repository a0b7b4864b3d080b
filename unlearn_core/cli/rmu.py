"""``rmu list|train|compare|search``: the RMU fine-tuning baseline."""

from __future__ import annotations

from unlearn_core.cli.common import (
    StageBars,
    add_command,
    emit,
    floats,
    progress_bar,
    runs_text,
    settings_of,
    training_bar,
    training_command,
)
from unlearn_core.features.default_target import DEFAULT_TARGET


def _rmu_config(args, engine):
    from unlearn_core.training.rmu import default_config

    ups = tuple(int(x) for x in floats(args.update_layers)) if args.update_layers else None
    return default_config(
        engine.model_name,
        layer=args.layer,
        update_layers=ups,
        steering_coeff=args.coeff,
        alpha=args.alpha,
        lr=args.lr,
        batch_size=args.batch_size,
        steps=args.steps,
        ctx=args.ctx,
        seed=args.seed,
    ).resolved(engine.model.cfg.n_layers)


def _rmu_bar(steps: int):
    return training_bar(steps, "RMU", ("forget", "retain"))


def cmd_rmu(args) -> None:
    """RMU: train a run on a target, list runs, compare with the clamps, or search settings."""
    handlers = {"train": _rmu_train, "compare": _rmu_compare, "search": _rmu_search}
    training_command(args, args.rcmd, _rmu_config, _rmu_bar, handlers, _rmu_list)


def _rmu_list(args) -> None:
    from unlearn_core.training import rmu

    runs = rmu.list_runs(settings_of(args).cache_dir)
    emit(args, runs, runs_text(rmu.PREFIX, runs) or "no RMU runs")


def _rmu_train(args, engine, t, cfg, update) -> None:
    from unlearn_core.training import rmu

    card = rmu.train(engine, args.name, t, cfg, progress=update, fresh=args.fresh)
    emit(
        args,
        card,
        f"rmu:{args.name}: {card['steps_done']} steps in {card['seconds']:.0f} s on {card['cpu']}; "
        f"last losses: forget {card['history'][-1]['forget_loss']:.4g}, retain "
        f"{card['history'][-1]['retain_loss']:.4g}; delta in {rmu.run_dir(engine.settings.cache_dir, args.name)}",
    )


def _rmu_compare(args, engine, t, cfg, update) -> None:
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.experiments import rmu as RX

    bars = StageBars(f"rmu compare {t.name}")
    r = RX.compare(
        engine,
        t,
        args.name,
        cfg,
        list(floats(args.clamps)),
        [int(n) for n in floats(args.ns)] if args.ns else None,
        args.percentile,
        args.loss_tokens,
        train_progress=update,
        ppl_tokens=args.ppl_tokens,
        stage=bars.stage,
    )
    bars.close()
    md = pages.save(r, "rmu compare", args, args.out) if args.out else pages.body(r, kind="rmu compare")
    emit(args, r, md)


def _rmu_search(args, engine, t, cfg, update) -> None:
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.experiments import rmu as RX

    grid = [
        dict(layer=int(L), steering_coeff=c, alpha=a, **({"lr": lr} if lr else {}))
        for L in floats(args.layers)
        for c in floats(args.coeffs)
        for a in floats(args.alphas)
        for lr in (floats(args.lrs) if args.lrs else [None])
    ]
    sbar = progress_bar(2 * len(grid), "RMU search (train, then evaluate)")
    s = RX.search(
        engine,
        t,
        grid,
        cfg,
        loss_tokens=args.loss_tokens,
        min_retain=args.min_retain,
        progress=lambda i, n: sbar.update(1),
    )
    sbar.close()
    md = pages.save(s, "rmu search", args, args.out) if args.out else RX.search_markdown(s)
    emit(args, s, md)


def add_parsers(sub) -> None:
    s = sub.add_parser("rmu", help="RMU fine-tuning baseline: train on a target, list, compare with the clamps")
    rsub = s.add_subparsers(dest="rcmd", required=True)
    r = add_command(rsub, "list", cmd_rmu, help="RMU runs in the cache directory")
    for name, hlp in (
        ("train", "train (or resume) an RMU run on a target's forget and retain text"),
        (
            "compare",
            "RMU vs static and gated clamps on the target's held-out known questions (trains the run first if needed)",
        ),
        ("search", "pick RMU settings on the target's dev (train-half) known questions"),
    ):
        r = add_command(rsub, name, cmd_rmu, help=hlp)
        r.add_argument("--target", default=DEFAULT_TARGET)
        if name != "search":
            r.add_argument("--name", required=True, help="the run's name; the model variant is rmu:<name>")
        g = r.add_argument_group("hyperparameters (default: core/assets/rmu.toml for the model, else the reference's)")
        g.add_argument("--layer", type=int, help="the steered layer (residual stream after this block)")
        g.add_argument("--update-layers", help="blocks whose MLP W_out is trained, e.g. 3,4,5 (default layer-2..layer)")
        g.add_argument("--coeff", type=float, help="steering coefficient c (0: no forget term, the no-op control)")
        g.add_argument("--alpha", type=float, help="retain loss weight")
        g.add_argument("--lr", type=float)
        g.add_argument("--batch-size", type=int)
        g.add_argument("--steps", type=int, help="batches")
        g.add_argument("--ctx", type=int, help="tokens per training window")
        g.add_argument("--seed", type=int)
        r.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
        if name == "train":
            r.add_argument("--fresh", action="store_true", help="discard an unfinished or finished run of this name")
        if name == "compare":
            r.add_argument("--clamps", default="100,200,400", help="clamp values c of the SAE configurations")
            r.add_argument("--ns", help="numbers of top features of the target's selection (default: its own N)")
            r.add_argument("--percentile", type=float, default=95.0, help="gate tau percentile on the retain corpora")
            r.add_argument("--ppl-tokens", type=int, default=2000, help="perplexity tokens a row (0 skips)")
        if name == "search":
            r.add_argument("--layers", default="5", help="steered layers to try")
            r.add_argument("--coeffs", default="100,300", help="steering coefficients to try")
            r.add_argument("--alphas", default="10,100", help="retain weights to try")
            r.add_argument("--lrs", help="learning rates to try (default: --lr, else the model's)")
            r.add_argument("--min-retain", type=float, default=0.95, help="dev retain mean a pick must keep")
        if name != "train":
            r.add_argument("--loss-tokens", type=int, default=10_000 if name == "compare" else 5_000)
            r.add_argument("--out", help="write <out>.json and <out>.md")
