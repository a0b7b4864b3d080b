"""An exclusive lock between processes, on a file beside what it guards.

Why: two processes that start cold at once (the quick start's demo and its server, two test
processes) would both convert the embedded model into the same folder, and the second's
``rmtree`` + rename removed files the first had just written.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block; a
    second holder, in this process or another, waits. The kernel releases it if the holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
