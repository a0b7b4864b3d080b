"""`python -m unlearn_core` / `unlearn`: the engine from the command line.

Every subcommand prints a human-readable table, or JSON with ``--json``. Long work shows tqdm
progress bars on stderr. One module per command group registers its subcommands
(``add_parsers``); shared arguments, output and error handling are in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import sys
import time

from unlearn_core.cli import (
    attack,
    cache,
    demo,
    experiments,
    features,
    gate,
    info,
    persist,
    rmu,
    sae,
    scoring,
    serve,
    sweep,
    targets,
)
from unlearn_core.cli.common import run

# the order of `unlearn --help`
REGISTRARS = (
    info.add_parsers,
    scoring.add_parsers,
    features.add_parsers,
    sae.add_eval_parser,
    demo.add_parsers,
    targets.add_parsers,
    experiments.add_parsers,
    gate.add_parsers,
    rmu.add_parsers,
    persist.add_parsers,
    attack.add_parsers,
    sae.add_parsers,
    sweep.add_parsers,
    cache.add_parsers,
    serve.add_parsers,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unlearn", description="SAE Unlearning Workbench engine")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in REGISTRARS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv, args.started = argv, time.monotonic()  # a result's provenance (cli.pages.save)
    return run(args)


__all__ = ["build_parser", "main"]
