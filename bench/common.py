"""Shared helpers for the benchmarks: engine loading, machine description, timing, tables."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parser(desc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--model", default="embedded:gemma-3-270m")
    p.add_argument("--sae", default="embedded")
    p.add_argument("--repeats", type=int, default=20)
    return p


def load(args):
    import warnings

    warnings.filterwarnings("ignore")
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import load_engine

    t = time.perf_counter()
    eng = load_engine(load_settings({"model": args.model, "saes": [args.sae]}), progress=False)
    return eng, time.perf_counter() - t


def machine() -> str:
    import torch

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu_name()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def cpu_name() -> str:
    from unlearn_core.core.devices import cpu_name as name  # the one reader of /proc/cpuinfo (RMU cards use it too)

    return name()


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """The CPU line, then a markdown table (the browser benchmarks' output)."""
    print(f"CPU: {cpu_name()}; {platform.machine()}, Python {platform.python_version()}")
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def timeit(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def row(name: str, xs: list[float]) -> str:
    return f"| {name} | {pct(xs, 0.5) * 1000:.0f} ms | {pct(xs, 0.95) * 1000:.0f} ms | {len(xs)} |"


def median(xs):
    return statistics.median(xs)


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server the benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
