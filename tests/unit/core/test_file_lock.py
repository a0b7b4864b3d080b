"""``core.file_lock.exclusive`` keeps a second process out until the first lets go (what stops two
cold starts from converting the embedded model into the same folder at once)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from unlearn_core.core.file_lock import exclusive

ROOT = Path(__file__).resolve().parents[3]

HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from unlearn_core.core.file_lock import exclusive
d = Path({d!r})
with exclusive(d / "x.lock"):
    (d / "held").touch()
    while not (d / "release").exists():
        time.sleep(0.05)
    (d / "done").touch()
"""


def _wait_for(path: Path, seconds: float = 300) -> None:
    end = time.monotonic() + seconds  # generous: only a broken holder takes this long
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.05)


def test_a_second_process_waits_for_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), d=str(tmp_path))])
    try:
        _wait_for(tmp_path / "held")
        got = threading.Event()
        seen_done: list[bool] = []

        def take() -> None:
            with exclusive(tmp_path / "x.lock"):
                seen_done.append((tmp_path / "done").exists())
                got.set()

        t = threading.Thread(target=take, daemon=True)
        t.start()
        assert not got.wait(1.0), "the lock was taken while another process held it"
        (tmp_path / "release").touch()
        t.join(300)
        assert got.is_set() and seen_done == [True]  # it got the lock only after the holder finished
    finally:
        holder.wait(300)
    assert holder.returncode == 0


def test_the_lock_is_released_after_an_exception(tmp_path):
    try:
        with exclusive(tmp_path / "y.lock"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with exclusive(tmp_path / "y.lock"):  # would block forever if the first were still held
        pass
