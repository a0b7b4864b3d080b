"""`persist` from the command line (tiny backend): train with a progress bar and ETA, list, the
comparison table (clean, clamps, RMU, persistent; the attack bench on each), the variant in a sweep
and in the feature commands, and clear errors for bad settings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_helpers import run_cli, tiny_sweep_args
from test_rmu import SMALL_TARGET


@pytest.fixture
def small(tmp_path, monkeypatch, shared_data):
    from unlearn_core.data.loaders import load_question_set

    for name, spec in (("forget", "quiz:bio@heldout"), ("retain", "quiz:retain@heldout")):
        qs = load_question_set(spec, str(shared_data)).questions[:12]
        (tmp_path / f"{name}.json").write_text(json.dumps([q.to_dict() for q in qs]))
    targets = tmp_path / "targets.toml"
    targets.write_text(SMALL_TARGET)
    monkeypatch.setenv("UNLEARN_TARGETS_FILE", str(targets))
    return ("--target", "bio-cloze")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "-1"], "lr = -1.0 is out of range"),
        (["--margin", "-2"], "margin = -2.0 is out of range"),
        (["--update-layers", "1"], "update_layers [1] must be between 0 and the SAE's layer 0"),
    ],
)
def test_cli_rejects_bad_settings(tmp_path, args, message, capsys):
    r = run_cli(capsys, "persist", "train", "--tiny", "--name", "x", "--cache-dir", str(tmp_path), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_cli_trains_compares_and_sweeps_with_the_variant(tmp_path, capsys, small):
    sub = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "unlearn_core", *a, "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    run = lambda *a: run_cli(capsys, *a, "--cache-dir", str(tmp_path))  # noqa: E731
    r = sub("persist", "train", "--tiny", "--name", "cli", "--steps", "6", *small)
    assert r.returncode == 0, r.stderr
    assert "persist:cli: 6 steps" in r.stdout and "ETA" in r.stderr
    assert "persist:cli" in run("persist", "list").stdout
    assert run("rmu", "train", "--tiny", "--name", "r", "--steps", "4", *small).returncode == 0
    r = run(
        "persist", "compare", "--tiny", "--name", "cli", "--steps", "6", "--rmu", "r", "--attacks", "filler",
        "--loss-tokens", "300", "--ppl-tokens", "200", "--out", str(tmp_path / "cmp"), "--json", *small,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["method"]: row for row in out["rows"]}
    assert {"clean", "clamp", "gated", "rmu", "persist"} <= set(rows)
    assert rows["persist"]["variant"] == "persist:cli" and rows["rmu"]["variant"] == "rmu:r"
    assert rows["clean"]["loss_added"] == pytest.approx(0.0, abs=1e-9)  # the clean row is the base model
    assert rows["persist"]["loss_added"] != 0.0 and rows["persist"]["ppl"] != rows["clean"]["ppl"]
    bench = {(x["defence"], x["attack"]) for x in out["attacks"]["rows"]}
    assert bench == {(d, "filler") for d in ("clamp", "gated", "rmu:r", "persist:cli", "none")}
    md = (tmp_path / "cmp.md").read_text()
    assert "| persist:cli |" in md and "| none |" in md and "filler" in md
    r = run(
        *tiny_sweep_args(n="2", clamps="20", limit=3, loss_tokens=300),
        "--variants", "persist:cli", "--model-variant", "persist:cli", "--out", str(tmp_path / "sw"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    sweep = {row["config"]: row for row in json.loads(r.stdout)["results"]}
    assert sweep["persist:cli"]["mode"] == "persist" and sweep["none"]["model"] == "persist:cli"
    r = run("features", "stats", "--tiny", "--corpus", "webtext", "--tokens", "200", "--model-variant", "persist:nope")
    assert r.returncode == 2 and "not found" in r.stderr


def test_cli_search_scores_each_setting_on_the_train_half(tmp_path, capsys, monkeypatch, shared_data):
    """On bio-tiny (known without the strict filter, so the random tiny model knows some dev facts)."""
    from pathlib import Path

    monkeypatch.setenv("UNLEARN_TARGETS_FILE", str(Path(__file__).parents[2] / "fixtures" / "robustness_targets.toml"))
    r = run_cli(
        capsys, "persist", "search", "--tiny", "--target", "bio-tiny", "--margins", "0,1", "--retain-weights", "1",
        "--steps-grid", "2", "--loss-tokens", "200", "--json", "--cache-dir", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["dev"] == "train half" and len(s["rows"]) == 2
    assert sorted(row["config"]["margin"] for row in s["rows"]) == [0.0, 1.0]
    assert all(row["method"] == "persist" and row["forget"] is not None for row in s["rows"])
    assert s["n_known"]["forget"] > 0 and s["best"] in [row["config"] for row in s["rows"]]
