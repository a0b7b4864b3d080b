"""The CLI run in the test's own process: ``run_cli(capsys, *args)`` gives what
``python -m unlearn_core ARGS`` gives (exit code, stdout, stderr) without a new interpreter's
start-up, for tests that check arguments, output and exit codes. Each command group keeps at
least one real subprocess test, so ``python -m unlearn_core`` itself stays covered.
``tiny_sweep_args`` spells the small ``sweep --tiny`` the tests run."""

from __future__ import annotations

import os
import subprocess


def run_cli(capsys, *args: str) -> subprocess.CompletedProcess:
    from unlearn_core.cli import main

    capsys.readouterr()  # what the test printed before is not the command's
    environ = dict(os.environ)  # main quiets libraries through the environment: undone here
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse errors (2), exit codes raised by a command, or a message (1)
        code = e.code
    finally:
        os.environ.clear()
        os.environ.update(environ)
    out = capsys.readouterr()
    err = out.err
    if isinstance(code, str):  # as the interpreter does: the message to stderr, exit code 1
        err, code = err + code + "\n", 1
    return subprocess.CompletedProcess(["unlearn", *args], 0 if code is None else code, out.out, err)


def tiny_sweep_args(n: str, clamps: str, limit: int, loss_tokens: int) -> list[str]:
    """``sweep --tiny`` at threshold 0.5 on every question (no known filter), 200 selection tokens:
    the small sweep the tests run, on their own grid (N, clamp values) and budgets."""
    return (
        f"sweep --tiny --thresholds 0.5 --n {n} --clamps {clamps} --limit {limit} --all-questions "
        f"--selection-tokens 200 --loss-tokens {loss_tokens}"
    ).split()
