"""Where a result came from: the command, the commit, the machine and the date, stored as the
``meta`` of every ``--out`` JSON so that a results table names them in one line (issue 38).

Torch-free and quick: the CLI calls it when it writes a result, and ``scripts/gen_docs.py``
renders the line from the JSON without loading the model stack.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from unlearn_core.core.paths import REPO_ROOT

NOT_RECORDED = "not recorded"
CLI = "python -m unlearn_core"


def git_commit(repo: Path = REPO_ROOT) -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when tracked files differ from it
    (a result from uncommitted code says so); ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """CPU model and core count; the GPU too when the command had torch use one (torch is never
    imported here: a command that did not load it ran on the CPU)."""
    text = f"{cpu_name()}, {os.cpu_count() or '?'} cores"
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            text += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not lose a finished result
        pass
    return text


def command_line(argv: list[str] | None = None, prog: str = CLI) -> str:
    """``prog`` and the arguments as a shell would take them back."""
    args = sys.argv[1:] if argv is None else argv
    return f"{prog} {shlex.join(args)}".strip()


def wall_text(seconds: float) -> str:
    return f"{seconds:.0f} s wall" if seconds < 600 else f"{seconds / 60:.1f} min wall"


def provenance(kind: str, argv: list[str] | None = None, prog: str = CLI, started: float | None = None) -> dict:
    """The ``meta`` of a result: its renderer (``kind``), command, commit, machine, UTC date and,
    given ``started`` (a ``time.monotonic()``), the wall time so far."""
    meta = {
        "kind": kind,
        "command": command_line(argv, prog),
        "commit": git_commit(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }
    if started is not None:
        meta["wall"] = wall_text(time.monotonic() - started)
    return meta


def _code(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it holds."""
    longest = count = 0
    for ch in text:
        count = count + 1 if ch == "`" else 0
        longest = max(longest, count)
    fence = "`" * (longest + 1)
    pad = " " if longest or text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def provenance_line(meta: dict) -> str:
    """The one line every results table starts with: command, commit, machine, date (and wall time);
    a field the run did not record says so."""

    def field(key: str, show) -> str:
        value = meta.get(key) or NOT_RECORDED
        return show(value) if value != NOT_RECORDED else f"{key} {NOT_RECORDED}"

    parts = [
        "Command: " + (_code(meta["command"]) if meta.get("command", NOT_RECORDED) != NOT_RECORDED else NOT_RECORDED),
        field("commit", lambda c: f"commit {_code(c)}"),
        field("machine", str),
        field("date", str),
    ]
    return " · ".join(parts + ([meta["wall"]] if meta.get("wall") else []))
