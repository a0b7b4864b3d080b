"""What every command shares: the settings and intervention arguments, the engine, progress bars,
output, and the one place errors become ``error: ...`` and exit code 2.

Only light modules are imported here: torch, TransformerLens, SAELens and the engine load inside
the commands that need them, so ``--help``, argument errors and the model-free commands start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Callable

from unlearn_core.core.settings import Settings, load_settings
from unlearn_core.data import loaders as D
from unlearn_core.method.modes import GATED_MODES, MODES

if TYPE_CHECKING:
    from unlearn_core.method.interventions import Intervention


def add_settings_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (also UNLEARN_* env vars or a TOML file)")
    g.add_argument("--config", help="TOML settings file (default: $UNLEARN_CONFIG or ./unlearn.toml)")
    g.add_argument("--model", help="'embedded:gemma-3-270m' (default) or a TransformerLens model name")
    g.add_argument(
        "--sae",
        action="append",
        dest="saes",
        help="'embedded', a local SAELens folder, or 'release:sae_id'; repeat for several",
    )
    g.add_argument("--device", help="auto|cpu|cuda[:N]")
    g.add_argument("--dtype", help="auto|float32|bfloat16|float16")
    g.add_argument("--cache-dir")
    g.add_argument("--data-dir")
    g.add_argument("--prompt-format", choices=["auto", "plain", "chat"])
    g.add_argument("--scoring", choices=["auto", "letter", "cloze"])
    g.add_argument("--targets", dest="targets_file", help="a TOML file of your own unlearning targets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true")


def add_command(sub, name: str, func: Callable[[argparse.Namespace], None], **kw) -> argparse.ArgumentParser:
    """The frame of every command: its parser (``kw``: help and the like), the settings arguments,
    and ``func`` to run; the caller adds the command's own arguments."""
    p = sub.add_parser(name, **kw)
    add_settings_args(p)
    p.set_defaults(func=func)
    return p


def add_intervention_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("intervention")
    g.add_argument("--features", help="comma-separated feature ids, e.g. 123,456")
    g.add_argument("--clamp", type=float, default=20.0, help="c: active features are set to -c (default 20)")
    g.add_argument("--mode", choices=MODES, default="clamp")
    g.add_argument(
        "--gate",
        type=float,
        help="gated modes: tau; the clamp applies to a prompt when the fraction "
        "of its tokens where a selected feature fires (rho) is > tau",
    )
    g.add_argument(
        "--gate-percentile",
        type=float,
        help="gated modes: tau = this percentile of rho over windows "
        "of --gate-corpus (DSG uses 95); calibrated once, cached",
    )
    g.add_argument("--gate-corpus", help="the retain corpus of --gate-percentile (default wikitext@train)")
    g.add_argument("--on", help="which SAE the features belong to (default: the first)")
    g.add_argument(
        "--intervention",
        action="append",
        default=[],
        help="extra intervention 'sae=KEY;features=1,2;clamp=20;mode=clamp[;gate=TAU]' (repeatable)",
    )


def add_variant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variant",
        help="also run the model variant 'rmu:<name>' or 'persist:<name>' (a finished `rmu train` or "
        "`persist train` run); "
        "the interventions then apply on top of it",
    )


def add_model_variant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
    p.add_argument(
        "--model-variant",
        dest="apply_variant",
        metavar="rmu:NAME|persist:NAME",
        help="run on this fine-tuned model (a finished `rmu train` or `persist train` run) in place of the "
        "model as loaded",
    )


def with_variant(args, engine, ivs, compute) -> dict:
    """{"base": compute(None) on the model as loaded, args.variant: compute(None) on the variant,
    "intervened": compute(ivs) on the variant (else on the base model)}; absent ones left out."""
    from unlearn_core.training.variants import applied

    out = {"base": compute(None)}
    if args.variant:
        with applied(engine, args.variant):
            out[args.variant] = compute(None)
            if ivs:
                out["intervened"] = compute(ivs)
    elif ivs:
        out["intervened"] = compute(ivs)
    return out


def settings_of(args):
    return load_settings(
        {
            "model": args.model,
            "saes": args.saes,
            "device": args.device,
            "dtype": args.dtype,
            "cache_dir": args.cache_dir,
            "data_dir": args.data_dir,
            "prompt_format": args.prompt_format,
            "scoring": args.scoring,
            "targets_file": args.targets_file,
        },
        config_file=args.config,
    )


def gate_tau(args, engine, sae: str, features: tuple[int, ...], mode: str) -> float | None:
    """tau from --gate or --gate-percentile (gated modes only; clear errors otherwise)."""
    given = args.gate is not None or args.gate_percentile is not None
    if mode not in GATED_MODES:
        if given or args.gate_corpus:
            raise ValueError(f"--gate/--gate-percentile/--gate-corpus are for --mode {' or '.join(GATED_MODES)}")
        return None
    if (args.gate is None) == (args.gate_percentile is None):
        raise ValueError(f"--mode {mode} needs exactly one of --gate TAU or --gate-percentile P")
    if args.gate is not None:
        return args.gate
    from unlearn_core.method.gate import DEFAULT_CORPUS, calibrate
    from unlearn_core.method.interventions import Intervention, validate

    validate([Intervention(sae, features, 1.0)], engine.saes)
    cal = calibrate(engine, sae, features, args.gate_corpus or DEFAULT_CORPUS, args.gate_percentile)
    print(
        f"gate: tau = {cal.tau:.4f}, the {cal.percentile:g}th percentile of rho over {cal.n_windows} windows of "
        f"{cal.corpus}",
        file=sys.stderr,
    )
    return cal.tau


def interventions_of(args, engine) -> list[Intervention]:
    from unlearn_core.method.interventions import Intervention, parse_features

    ivs = []
    if args.features or args.mode == "reconstruct":
        sae, feats = args.on or engine.default_sae, parse_features(args.features or "")
        ivs.append(Intervention(sae, feats, args.clamp, args.mode, gate_tau(args, engine, sae, feats, args.mode)))
    elif args.gate is not None or args.gate_percentile is not None:
        raise ValueError("--gate/--gate-percentile need --features")
    for spec in args.intervention:
        kv = dict(part.split("=", 1) for part in spec.split(";") if part.strip())
        ivs.append(
            Intervention(
                kv.get("sae", engine.default_sae),
                parse_features(kv.get("features", "")),
                float(kv.get("clamp", 20.0)),
                kv.get("mode", "clamp"),
                float(kv["gate"]) if "gate" in kv else None,
            )
        )
    return ivs


def progress_bar(total: int | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def training_bar(steps: int, desc: str, losses: tuple[str, ...]):
    """A training run's bar and its ``update(rec)``: steps done (a resumed run starts at its step; a
    search's runs reset it), the last losses named in ``losses`` and the ETA."""
    bar = progress_bar(steps, desc)

    def update(rec: dict) -> None:
        if bar.total != rec["steps"]:
            bar.reset(total=rec["steps"])
            bar.update(rec["step"])
        else:
            bar.update(rec["step"] - bar.n)
        shown = " ".join(f"{k} {rec[k + '_loss']:.3g}" for k in losses if k + "_loss" in rec)
        bar.set_postfix_str(f"{shown} ETA {rec['eta_s']:.0f}s")

    return bar, update


def training_command(args, sub: str, config, bar, handlers: dict, lister) -> None:
    """The body `rmu` and `persist` share: ``list`` needs no model; every other subcommand loads
    the engine and the target, builds the settings (``config(args, engine)``) and runs its handler
    with a training bar (``bar(steps)``)."""
    from unlearn_core.evaluation.targets import engine_target

    if sub == "list":
        lister(args)
        return
    engine = engine_of(args)
    target = engine_target(engine, args.target)
    cfg = config(args, engine)
    b, update = bar(cfg.steps)
    handlers[sub](args, engine, target, cfg, update)
    b.close()


def runs_text(prefix: str, runs: list[dict], extra=lambda r: "") -> str:
    """One line per training run (``rmu list``, ``persist list``)."""
    return "\n".join(
        f"{prefix}{r['name']:<24} {r['status']:<10} target {r.get('target')}  {extra(r)}"
        f"{r.get('steps_done', '')} steps {r.get('seconds', '')} s"
        for r in runs
    )


class StageBars:
    """One bar per stage of a long command, each with its total (so its ETA): ``stage(what, n)``
    closes the current bar and opens the next, returning its ``update``; ``close()`` ends the last."""

    def __init__(self, prefix: str):
        self.prefix, self.bars = prefix, []

    def stage(self, what: str, n: int | None) -> Callable[[int], None]:
        self.close()
        self.bars.append(progress_bar(n, f"{self.prefix}: {what}"))
        return self.bars[-1].update

    def close(self) -> None:
        if self.bars:
            self.bars[-1].close()


def step_progress(bar) -> Callable[[int, int], None]:
    """A ``progress(i, n)`` callback (i of n steps done) for a bar made before n was known: the
    bar takes n as its total on the first call, so it shows its ETA from then on."""

    def update(i: int, n: int) -> None:
        if bar.total != n:
            bar.total = n
            bar.refresh()
        bar.update(i - bar.n)

    return update


def engine_of(args):
    """The engine; with ``--model-variant rmu:<name>`` (the feature commands) that RMU model in
    place of the model as loaded, until the command ends (``main`` restores the weights)."""
    if getattr(args, "tiny", False):
        from unlearn_core.model.tiny import tiny_engine

        engine = tiny_engine(cache_dir=settings_of(args).cache_dir)
    else:
        from unlearn_core.model.engine import load_engine

        engine = load_engine(settings_of(args))
    if getattr(args, "apply_variant", None):
        from unlearn_core.training.variants import applied

        args.held.enter_context(applied(engine, args.apply_variant))
    return engine


def emit(args, obj, text: str) -> None:
    print(json.dumps(obj, indent=2) if args.json else text)


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.replace(",", " ").split())


def sae_key(args, engine) -> str:
    key = args.on or engine.default_sae
    if key not in engine.saes:
        raise ValueError(f"unknown SAE {key!r}; loaded: {sorted(engine.saes)}")
    return key


def fmt_probs(probs) -> str:
    return "  ".join(f"{L}={p:.3f}" for L, p in zip(D.LETTERS, probs))


class LazyHelp(str):
    """A help text made only when help is printed: argparse %-formats every help string then,
    and this one builds its text first. For defaults that live in heavy modules (the SAE
    training configs import TransformerLens), so that building the parser stays cheap."""

    def __new__(cls, make: Callable[[], str]) -> "LazyHelp":
        self = super().__new__(cls, "%%")
        self.make = make
        return self

    def __mod__(self, params):
        return self.make() % params


def check_device(settings: Settings) -> None:
    """An unusable device fails here, in one line, before anything loads: `serve` would otherwise
    start listening and hit it in its loader thread (a traceback, no exit). 'auto' and 'cpu'
    cannot fail, so only other devices pay for importing torch to check."""
    if (settings.device or "auto").strip().lower() not in ("auto", "cpu"):
        settings.resolved_device()


def quiet_libraries(verbose: bool) -> None:
    """Warnings and transformers' logging off unless --verbose; transformers is told through its
    environment variable when it is not imported yet (importing it here costs about a second)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    warnings.filterwarnings("ignore")
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; the expected failures print one ``error:`` line and return 2."""
    verbose = getattr(args, "verbose", False)
    quiet_libraries(verbose)
    try:
        if hasattr(args, "device"):
            check_device(settings_of(args))
        with contextlib.ExitStack() as args.held:  # what the command applied to the model, undone at its end
            args.func(args)
    except (D.DataUnavailableError, ValueError, KeyError, RuntimeError, OSError) as e:
        if verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
