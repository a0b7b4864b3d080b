"""The HTTP contract loads without torch: the Streamlit UI and remote users import the schemas
and the client without the engine (a torch import there costs seconds and gigabytes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = (
    "import sys; import unlearn_core.server.schemas as S; import unlearn_core.server.client; "
    "assert S.MCQRequest and S.JobSpec and S.Limits().max_abs_clamp; "
    "print('torch' in sys.modules)"
)


def test_schemas_and_client_import_no_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "importing the schemas or the client loaded torch"


def test_the_check_sees_torch():
    """The same child check reports True once something imports torch (so the test can fail)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = CHECK.replace("import unlearn_core.server.client;", "import unlearn_core.method.interventions;")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
