"""The app talks to the server: no module of it (unlearn_core.ui, the client) imports torch.

Importing torch costs seconds and gigabytes the app never uses; a stray import (a constant taken
from an engine module) is how it creeps in. Each check runs in a fresh interpreter, so what this
test process imported does not count, and a failure names the import chain that brought torch.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import unlearn_core.ui

ROOT = Path(__file__).resolve().parents[2]

# a finder that records, the first time torch is imported, which modules were importing it
CHAIN_HOOK = """
import sys, traceback
class _Watch:
    chain = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and _Watch.chain is None:
            names = [f.f_globals.get("__name__", "?") for f, _ in traceback.walk_stack(None)]
            _Watch.chain = [n for n in reversed(names) if not n.startswith(("importlib", "_frozen"))]
        return None
sys.meta_path.insert(0, _Watch())
"""


def torch_chain(body: str) -> str:
    """Run ``body`` in a fresh interpreter; '' when torch stayed out, else the importers' chain."""
    code = CHAIN_HOOK + body + "\nprint('CHAIN:' + ' -> '.join(_Watch.chain) if 'torch' in sys.modules else 'CLEAN')\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    return "" if last == "CLEAN" else last.removeprefix("CHAIN:")


def ui_modules() -> list[str]:
    return sorted(f"unlearn_core.ui.{m.name}" for m in pkgutil.iter_modules(unlearn_core.ui.__path__))


def test_every_ui_module_and_the_client_import_no_torch():
    names = [*ui_modules(), "unlearn_core.server.client"]
    assert "unlearn_core.ui.connection" in names and len(names) > 10  # the walk found the package
    body = "import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)
    chain = torch_chain(body)
    assert not chain, f"torch is imported through: {chain}"


def test_the_mode_labels_the_pages_show_come_without_torch():
    """The labels are read when a page runs (not at import), so the check above cannot see them."""
    chain = torch_chain("from unlearn_core.ui import pickers\nassert pickers.mode_labels()['clamp']\n")
    assert not chain, f"torch is imported through: {chain}"
