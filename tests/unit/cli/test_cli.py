"""The CLI's assembly: heavy libraries load only in the commands that need them, the help of
every command is whole, one default target, and progress bars that know their totals."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from unlearn_core.cli import build_parser
from unlearn_core.features.default_target import DEFAULT_TARGET

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers", "pandas")


def _loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules it imported."""
    probe = f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    r = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["cache", "info", "--json"],
        ["target", "list", "--json"],
        ["info", "--device", "cpu", "--dtype", "float32", "--json"],
    ],
)
def test_model_free_commands_import_no_heavy_library(argv, tmp_path):
    """`cache info`, `target list` (and the parser itself) start without torch, TransformerLens,
    SAELens, transformers or pandas: the start-up is the command's, not the model stack's."""
    code = (
        f"from unlearn_core.cli import main\nimport contextlib, io\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({argv!r} + ['--cache-dir', {str(tmp_path)!r}]) == 0"
    )
    if argv[0] == "info":  # its resolved settings need torch (is CUDA there?); nothing heavier
        assert _loaded_after(code) == ["torch"]
    else:
        assert _loaded_after(code) == []


def test_help_of_every_command_builds_without_the_training_modules():
    """train-sae's and finetune-sae's help show their configs' defaults, read only when printed."""
    assert _loaded_after("from unlearn_core.cli import build_parser\nbuild_parser()") == []
    from unlearn_core.training.finetune_sae import KLFinetuneConfig
    from unlearn_core.training.train_sae import TrainSAEConfig

    subs = build_parser()._subparsers._group_actions[0].choices
    train, finetune = (" ".join(subs[c].format_help().split()) for c in ("train-sae", "finetune-sae"))  # unwrapped
    assert f"default {TrainSAEConfig.layer})" in train and f"(default {TrainSAEConfig.n_tokens:,})" in train
    assert f"(default {TrainSAEConfig.normalize}; covariance_whitening" in train
    assert f"windows of {KLFinetuneConfig.ctx} tokens per step (default {KLFinetuneConfig.batch_size})" in finetune


def test_every_subcommand_is_registered_with_its_handler():
    subs = build_parser()._subparsers._group_actions[0].choices
    assert list(subs) == [
        "info",
        "prepare",
        "mcq",
        "eval",
        "ppl",
        "generate",
        "features",
        "sae-eval",
        "demo",
        "target",
        "experiment",
        "gate",
        "rmu",
        "persist",
        "attack",
        "train-sae",
        "finetune-sae",
        "sweep",
        "cache",
        "serve",
    ]


def test_the_default_target_is_defined_once():
    """No other module of the package spells the default target's name: they import it."""
    hits = []
    for path in sorted((ROOT / "unlearn_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == DEFAULT_TARGET:
                hits.append(str(path.relative_to(ROOT)))
    assert hits == ["unlearn_core/features/default_target.py"]
    p = build_parser()
    assert p.parse_args(["demo"]).target == DEFAULT_TARGET
    assert p.parse_args(["gate"]).target == DEFAULT_TARGET
    assert p.parse_args(["rmu", "train", "--name", "x"]).target == DEFAULT_TARGET
    assert p.parse_args(["persist", "train", "--name", "x"]).target == DEFAULT_TARGET


def test_step_progress_gives_the_bar_its_total():
    from unlearn_core.cli.common import progress_bar, step_progress

    bar = progress_bar(None, "steps")
    update = step_progress(bar)
    update(1, 4)
    assert bar.total == 4 and bar.n == 1
    update(4, 4)
    assert bar.n == 4
    bar.close()


def test_demo_statistics_total_is_the_tokens_the_statistics_count(tmp_path, shared_data):
    """The demo's bar total is exactly what the selection statistics report, and 0 once cached."""
    from unlearn_core.cli.demo import stats_total
    from unlearn_core.evaluation.targets import default_intervention, engine_target, replace_intervention
    from unlearn_core.model.tiny import tiny_engine

    engine = tiny_engine(cache_dir=str(tmp_path))
    t = replace_intervention(engine_target(engine, DEFAULT_TARGET), tokens=600)  # small: a quick test
    total = stats_total(engine, t)
    seen = []
    default_intervention(engine, t, progress=seen.append)
    assert total == sum(seen) > 0
    assert stats_total(engine, t) == 0


def test_target_eval_known_filter_total_is_the_questions_it_scores(tmp_path, shared_data):
    """`target eval`'s bar total: one step per question of the sets whose known list is not cached."""
    from unlearn_core.evaluation.target_eval import evaluate_target, known_filter_total
    from unlearn_core.evaluation.targets import engine_target
    from unlearn_core.method.interventions import Intervention
    from unlearn_core.model.tiny import tiny_engine

    files = []
    for name, n in (("forget", 3), ("retain", 2)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(
            json.dumps(
                [{"question": f"{name} {i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4} for i in range(n)]
            )
        )
    engine = tiny_engine(cache_dir=str(tmp_path / "cache"))
    t = engine_target(engine, DEFAULT_TARGET)
    total = known_filter_total(engine, t, str(files[0]), [str(files[1])])
    seen = []
    evaluate_target(
        engine,
        t,
        str(files[0]),
        [str(files[1])],
        loss_tokens=0,
        intervention=Intervention(engine.default_sae, (0, 1), 10.0),
        progress=lambda n=1: seen.append(n),
    )
    assert total == sum(seen) == 5
    assert known_filter_total(engine, t, str(files[0]), [str(files[1])]) == 0


def test_prepare_says_what_it_did(capsys, tmp_path):
    """`prepare` is what setup runs: for a non-embedded model it does nothing and says so; for the
    embedded model with the converted folder in place it reports it without converting again."""
    from unlearn_core.model.models import embedded_model_dir

    r = run_cli(capsys, "prepare", "--json", "--model", "gpt2", "--cache-dir", str(tmp_path))
    assert r.returncode == 0 and json.loads(r.stdout) == {"model": "gpt2", "prepared": None}
    done = embedded_model_dir(tmp_path)
    done.mkdir(parents=True)
    (done / "model.safetensors").write_bytes(b"")
    (done / "tokenizer.json").write_text("{}")
    r = run_cli(capsys, "prepare", "--json", "--cache-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"model": "embedded:gemma-3-270m", "prepared": str(done), "converted": False}


def test_sweep_grid_defaults_to_the_targets_as_the_batch_page_does():
    """Issue 35, "one source for defaults": without --thresholds/--n/--clamps, `sweep --target T`
    starts from T's default (N and N/2; c, c/2, c/4), the same grid the Batch page prefills."""
    from unlearn_core.cli import build_parser
    from unlearn_core.cli.sweep import _grid
    from unlearn_core.evaluation.targets import get_target
    from unlearn_core.ui.batch_form import default_grid as form_grid

    p = build_parser()
    t = get_target("bio-basics")
    thresholds, ns, cs = _grid(p.parse_args(["sweep", "--target", "bio-basics", "--out", "x"]))
    assert ns == sorted({t.selection.n // 2, t.selection.n}) and cs == [t.intervention.c / f for f in (4, 2, 1)]
    form = form_grid(
        {"name": "bio-basics", "selection": t.to_dict()["selection"], "intervention": {"c": t.intervention.c}}
    )
    assert form == (", ".join(f"{x:g}" for x in thresholds), ", ".join(map(str, ns)), ", ".join(f"{x:g}" for x in cs))
    assert _grid(p.parse_args(["sweep", "--target", "bio-basics", "--n", "3", "--out", "x"]))[1] == [3]
    with pytest.raises(SystemExit, match="needed without --target"):
        _grid(p.parse_args(["sweep", "--out", "x"]))


def test_attack_refuses_an_unknown_attack_before_loading_a_model(capsys):
    r = run_cli(capsys, "attack", "--attacks", "rephrase,relearnn", "--model", "no-such-model")
    assert r.returncode != 0 and "unknown attack" in r.stderr and "relearnn" in r.stderr
