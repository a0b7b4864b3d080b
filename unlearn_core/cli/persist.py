"""``persist list|train|compare|search``: persistent SAE-guided unlearning (the clamp's features
suppressed by a weight edit; ``training.persist``)."""

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

OVERRIDES = (
    "forget_weight",
    "retain_weight",
    "lm_weight",
    "margin",
    "forget_mode",
    "clamp",
    "retain_norm",
    "lr",
    "batch_size",
    "steps",
    "ctx",
    "seed",
    "n",
)


def _config(args, engine):
    from unlearn_core.training.persist import default_config

    layers = lambda s: tuple(int(x) for x in floats(s)) if s else None  # noqa: E731
    return default_config(
        engine.model_name,
        update_layers=layers(args.update_layers),
        retain_layers=layers(args.retain_layers),
        features=layers(args.features),
        method=args.method,
        **{k: getattr(args, k) for k in OVERRIDES},
    )


def _bar(steps: int):
    return training_bar(steps, "persist", ("forget", "retain", "lm"))


def cmd_persist(args) -> None:
    """Train a persistent run on a target, list runs, compare it with the clamps and RMU, or search settings."""
    handlers = {"train": _train, "compare": _compare, "search": _search}
    training_command(args, args.pcmd, _config, _bar, handlers, _list)


def _list(args) -> None:
    from unlearn_core.training import persist as P

    runs = P.list_runs(settings_of(args).cache_dir)
    text = runs_text(P.PREFIX, runs, lambda r: f"features {r.get('features')}  ")
    emit(args, runs, text or "no persistent runs")


def _train(args, engine, t, cfg, update) -> None:
    from unlearn_core.training import persist as P

    card = P.train(engine, args.name, t, cfg, progress=update, fresh=args.fresh)
    last = card["history"][-1]
    emit(
        args,
        card,
        f"persist:{args.name}: {card['steps_done']} steps in {card['seconds']:.0f} s on {card['cpu']}; "
        f"features {card['features']} ({card['selection']}); last losses: forget {last['forget_loss']:.4g}, "
        f"retain {last['retain_loss']:.4g}, lm {last['lm_loss']:.4g}; delta in "
        f"{P.run_dir(engine.settings.cache_dir, args.name)}",
    )


def _compare(args, engine, t, cfg, update) -> None:
    from unlearn_core.attacks import comparison as CMP
    from unlearn_core.cli import pages

    bars = StageBars(f"persist compare {t.name}")
    r = CMP.compare(
        engine,
        t,
        args.name,
        cfg,
        rmu_name=args.rmu,
        attacks=args.attacks,
        loss_tokens=args.loss_tokens,
        ppl_tokens=args.ppl_tokens,
        train_progress=update,
        stage=bars.stage,
    )
    bars.close()
    md = pages.save(r, "persist compare", args, args.out) if args.out else CMP.markdown(r)
    emit(args, r, md)


def _search(args, engine, t, cfg, update) -> None:
    from unlearn_core.cli import pages
    from unlearn_core.evaluation.experiments import persist as PX

    grid = [
        {"forget_mode": fm, "retain_norm": rn, "margin": m, "retain_weight": w, "lm_weight": lm, "steps": int(s)}
        for fm in args.forget_modes.split(",")
        for rn in args.retain_norms.split(",")
        for m in floats(args.margins)
        for w in floats(args.retain_weights)
        for lm in floats(args.lm_weights)
        for s in floats(args.steps_grid)
    ]
    sbar = progress_bar(2 * len(grid), "persist search (train, then evaluate)")
    s = PX.search(
        engine,
        t,
        grid,
        cfg,
        loss_tokens=args.loss_tokens,
        min_retain=args.min_retain,
        progress=lambda i, n: sbar.update(1),
    )
    sbar.close()
    md = pages.save(s, "persist search", args, args.out) if args.out else PX.search_markdown(s)
    emit(args, s, md)


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "persist", help="persistent SAE-guided unlearning: the clamp's features suppressed in the weights (CRISP-style)"
    )
    psub = s.add_subparsers(dest="pcmd", required=True)
    add_command(psub, "list", cmd_persist, help="persistent runs in the cache directory")
    for name, hlp in (
        ("train", "train (or resume) a persistent run on a target's selected features"),
        (
            "compare",
            "clean, static and gated clamps, RMU and the persistent run: accuracy, loss, perplexity and every "
            "attack's recovery (trains the run first if needed)",
        ),
        ("search", "pick the persistent settings on the target's dev (train-half) known questions"),
    ):
        r = add_command(psub, name, cmd_persist, help=hlp)
        r.add_argument("--target", default=DEFAULT_TARGET)
        if name != "search":
            r.add_argument("--name", required=True, help="the run's name; the model variant is persist:<name>")
        g = r.add_argument_group("settings (default: core/assets/persist.toml for the model, else its reference)")
        g.add_argument("--method", help="feature selection method (default: the target's)")
        g.add_argument("--n", type=int, help="number of selected features (default: the target's N)")
        g.add_argument("--update-layers", help="blocks whose MLP W_out is trained, e.g. 3,4,5 (default: SAE layer-2..)")
        g.add_argument("--retain-layers", help="layers whose residual the retain term keeps (default: the SAE's)")
        g.add_argument("--forget-weight", type=float, help="weight of the forget term (0: the no-op control)")
        g.add_argument("--retain-weight", type=float, help="weight of the retain term")
        g.add_argument("--lm-weight", type=float, help="weight of the KL language-modelling term (0 skips it)")
        g.add_argument("--margin", type=float, help="suppress mode: pre-activations pushed to -margin (0: to zero)")
        g.add_argument("--forget-mode", choices=("suppress", "clamp"), help="the forget term (see training.persist)")
        g.add_argument("--clamp", type=float, help="clamp mode's c (default: the target's)")
        g.add_argument("--retain-norm", choices=("total", "per_dim"), help="the retain term's scale")
        g.add_argument("--features", help="given features in place of the target's selection, e.g. 12,907")
        g.add_argument("--lr", type=float)
        g.add_argument("--batch-size", type=int)
        g.add_argument("--steps", type=int, help="batches")
        g.add_argument("--ctx", type=int, help="tokens per training window")
        g.add_argument("--seed", type=int)
        r.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
        if name == "train":
            r.add_argument("--fresh", action="store_true", help="discard an unfinished or finished run of this name")
        if name == "compare":
            r.add_argument("--rmu", help="the RMU run to compare (a finished `rmu train` run's name)")
            r.add_argument(
                "--attacks",
                default="rephrase,fill_blank,context,few_shot,filler,generation,relearn",
                help="the attack bench's attacks ('' skips the bench)",
            )
            r.add_argument("--ppl-tokens", type=int, default=2000, help="perplexity tokens a row (0 skips)")
        if name == "search":
            r.add_argument("--forget-modes", default="suppress", help="forget terms to try: suppress,clamp")
            r.add_argument("--retain-norms", default="per_dim", help="retain scales to try: total,per_dim")
            r.add_argument("--margins", default="300", help="margins to try")
            r.add_argument("--retain-weights", default="10", help="retain weights to try")
            r.add_argument("--lm-weights", default="0", help="lm weights to try")
            r.add_argument("--steps-grid", default="100", help="step counts to try")
            r.add_argument("--min-retain", type=float, default=0.95, help="dev retain mean a pick must keep")
        if name != "train":
            r.add_argument("--loss-tokens", type=int, default=10_000 if name == "compare" else 5_000)
            r.add_argument("--out", help="write <out>.json and <out>.md")
