"""bench/gpu_check.py (the GPU check of bench/gpu.sh) in its CPU dry run: every step runs and the
table has every row; a step that errors is a FAILED row and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
SCRIPT = ROOT / "bench" / "gpu_check.py"
SMALL = [
    "--dry-run",
    "--questions",
    "8",
    "--sweep-questions",
    "2",
    "--server-repeats",
    "2",
    "--unit-tests",
    "tests/unit/evaluation/test_mcq.py -k test_batched_scoring_with_padding_equals_one_by_one",
]
ROWS = [
    "GPU",
    "torch / CUDA / host",
    "model",
    "build engine",
    "SAE",
    "questions",
    "calibration:",
    "warm-up",
    "8 questions, clean model",
    "8 questions, one clamp",
    "sweep: 16 configurations x 2 questions",
    "server /api/mcq",
    "CUDA vs CPU parity tests",
    "unit tests, UNLEARN_TEST_DEVICE=cpu",
    "total wall time",
]


def table(md: str) -> dict[str, str]:
    rows = [ln.strip("|").split("|", 1) for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    return {k.strip(): v.strip() for k, v in rows[1:]}


def row(rows: dict[str, str], prefix: str) -> str:
    hits = [v for k, v in rows.items() if k.startswith(prefix)]
    assert len(hits) == 1, f"row {prefix!r}: {hits} in {list(rows)}"
    return hits[0]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_check

    return gpu_check


def test_dry_run_has_every_row(tmp_path):
    out = tmp_path / "gpu_check.md"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    md = out.read_text()
    assert md in p.stdout  # printed and written: the same table
    rows = table(md)
    for name in ROWS:
        v = row(rows, name)
        assert v and "FAILED" not in v and "SKIPPED" not in v, (name, v)
    assert "questions/s" in row(rows, "8 questions, one clamp")
    assert "configuration-questions/s" in row(rows, "sweep:")
    assert "p50" in row(rows, "server /api/mcq")
    assert "passed" in row(rows, "CUDA vs CPU parity tests") and "1 passed" in row(rows, "unit tests")
    assert md.rstrip().endswith("all steps passed")


def test_a_failing_step_fails_the_check(gpu_check, monkeypatch, tmp_path):
    """The sweep raises: its row says FAILED, the other steps still run, the exit status is 1."""

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "evaluate_configs", boom)
    monkeypatch.setattr(gpu_check, "run_pytest", lambda *a, **k: "stubbed")
    out = tmp_path / "t.md"
    assert gpu_check.main([*SMALL, "--out", str(out)]) == 1
    md = out.read_text()
    rows = table(md)
    assert row(rows, "warm-up").startswith("FAILED: RuntimeError: boom")  # the warm-up runs a sweep too
    assert row(rows, "sweep:").startswith("FAILED: RuntimeError: boom")
    assert "p50" in row(rows, "server /api/mcq") and row(rows, "unit tests") == "stubbed"
    assert "FAILED steps: warm-up, sweep" in md


def test_pytest_step_fails_when_pytest_does(gpu_check):
    with pytest.raises(RuntimeError, match="pytest exit 5"):
        gpu_check.run_pytest(["tests/unit/evaluation/test_mcq.py", "-k", "no_such_test_anywhere"], {}, 120)


def test_hard_coded_config_is_transformer_lens_gemma_2_2b(gpu_check):
    """The fallback used when get_pretrained_model_config fails has the same shapes and architecture."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    tl = get_pretrained_model_config(gpu_check.MODEL_NAME).to_dict()
    ours = HookedTransformerConfig.from_dict(dict(gpu_check.GEMMA2_2B)).to_dict()
    naming = {"model_name", "tokenizer_name", "initializer_range", "init_weights", "tokenizer_prepends_bos"}
    assert {k: (v, ours.get(k)) for k, v in tl.items() if k not in naming and v != ours.get(k)} == {}


def test_the_unit_step_leaves_out_the_streamlit_modules_only_where_streamlit_is_missing(gpu_check):
    with_st = gpu_check.default_unit_tests(False, have_streamlit=True)
    without = gpu_check.default_unit_tests(False, have_streamlit=False)
    assert "--ignore" not in with_st
    ignored = [a for a in without.split() if a.startswith("tests/")]
    assert sorted(ignored) == [
        "tests/app/test_app.py",
        "tests/app/test_app_clamp.py",
        "tests/app/test_app_defects.py",
        "tests/app/test_app_persist.py",
        "tests/app/test_app_rmu.py",
        "tests/app/test_app_robustness.py",
    ]
    assert without.startswith(with_st)
    assert gpu_check.default_unit_tests(True, have_streamlit=False) == "tests/unit/evaluation/test_mcq.py"
