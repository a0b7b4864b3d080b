"""Settings priority and validation, and the CLI's non-model paths (the model is never loaded here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from unlearn_core.core.settings import EMBEDDED_MODEL, EMBEDDED_SAE, REPO_ROOT, Settings, load_settings

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No UNLEARN_* settings from the environment and no ./unlearn.toml in the working directory."""
    for k in list(os.environ):
        if k.startswith("UNLEARN_") and k != "UNLEARN_NO_HUB":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _toml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- settings


def test_defaults(clean):
    s = load_settings()
    assert s == Settings()
    assert s.model == EMBEDDED_MODEL
    assert s.saes == [EMBEDDED_SAE]
    assert s.data_dir is None
    assert Path(s.cache_dir) == REPO_ROOT / "cache"


def test_priority_defaults_toml_env_overrides(clean, monkeypatch):
    cfg = _toml(clean / "cfg.toml", 'model = "toml-model"\ndevice = "cpu"\ndtype = "float32"\nscoring = "letter"\n')
    s = load_settings(config_file=cfg)
    assert (s.model, s.device, s.dtype, s.scoring) == ("toml-model", "cpu", "float32", "letter")
    assert s.prompt_format == "auto"  # untouched key keeps its default

    monkeypatch.setenv("UNLEARN_MODEL", "env-model")
    monkeypatch.setenv("UNLEARN_DTYPE", "bfloat16")
    s = load_settings(config_file=cfg)
    assert (s.model, s.dtype, s.device) == ("env-model", "bfloat16", "cpu")  # env beats TOML

    s = load_settings({"model": "flag-model", "dtype": None, "device": None}, config_file=cfg)
    assert s.model == "flag-model"  # overrides beat env
    assert s.dtype == "bfloat16" and s.device == "cpu"  # None overrides are ignored


def test_config_from_env_var_and_cwd_file(clean, monkeypatch):
    _toml(clean / "unlearn.toml", 'model = "cwd-model"\n')
    assert load_settings().model == "cwd-model"
    other = _toml(clean / "other.toml", 'model = "env-config-model"\n')
    monkeypatch.setenv("UNLEARN_CONFIG", other)
    assert load_settings().model == "env-config-model"  # UNLEARN_CONFIG replaces ./unlearn.toml
    explicit = _toml(clean / "explicit.toml", 'model = "explicit-model"\n')
    assert load_settings(config_file=explicit).model == "explicit-model"


def test_missing_config_file_is_a_clean_error(clean):
    with pytest.raises(ValueError, match="not found"):
        load_settings(config_file=str(clean / "missing.toml"))


def test_empty_env_value_is_ignored(clean, monkeypatch):
    monkeypatch.setenv("UNLEARN_MODEL", "")
    assert load_settings().model == EMBEDDED_MODEL


def test_unknown_keys_raise(clean, monkeypatch):
    with pytest.raises(ValueError, match="unknown settings"):
        load_settings({"modle": "x"})
    cfg = _toml(clean / "bad.toml", "bogus_key = 1\n")
    with pytest.raises(ValueError, match="bogus_key"):
        load_settings(config_file=cfg)


@pytest.mark.parametrize("key,value", [("prompt_format", "fancy"), ("scoring", "vibes"), ("dtype", "int8")])
def test_bad_values_raise(clean, monkeypatch, key, value):
    with pytest.raises(ValueError, match=key):
        load_settings({key: value})
    monkeypatch.setenv(f"UNLEARN_{key.upper()}", value)
    with pytest.raises(ValueError, match=key):
        load_settings()


def test_empty_sae_list_raises(clean, monkeypatch):
    with pytest.raises(ValueError, match="SAE"):
        load_settings({"saes": []})
    monkeypatch.setenv("UNLEARN_SAES", " ; ;")
    with pytest.raises(ValueError, match="SAE"):
        load_settings()


def test_bad_toml_raises_value_error(clean):
    import tomllib

    cfg = _toml(clean / "broken.toml", "model = \n")
    with pytest.raises(tomllib.TOMLDecodeError):  # a ValueError subclass: the CLI reports it cleanly
        load_settings(config_file=cfg)
    assert issubclass(tomllib.TOMLDecodeError, ValueError)


def test_saes_from_env_split_on_semicolon(clean, monkeypatch):
    monkeypatch.setenv("UNLEARN_SAES", "embedded; gemma-scope-2-270m-pt-res:layer_12_width_16k_l0_small ;/tmp/my_sae;")
    assert load_settings().saes == ["embedded", "gemma-scope-2-270m-pt-res:layer_12_width_16k_l0_small", "/tmp/my_sae"]
    # a TOML list and a list override stay lists
    cfg = _toml(clean / "s.toml", 'saes = ["a", "b"]\n')
    monkeypatch.delenv("UNLEARN_SAES")
    assert load_settings(config_file=cfg).saes == ["a", "b"]
    assert load_settings({"saes": ["x"]}, config_file=cfg).saes == ["x"]


def test_other_env_vars(clean, monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "c"))
    s = load_settings()
    assert s.data_dir == str(tmp_path / "d") and s.cache_dir == str(tmp_path / "c")


@pytest.mark.parametrize(
    "model,fmt,scoring",
    [
        (EMBEDDED_MODEL, "plain", "cloze"),
        ("gemma-2-2b", "plain", "cloze"),
        ("google/gemma-2-2b-it", "chat", "letter"),
        ("gemma-2b-it", "chat", "letter"),
        ("Qwen/Qwen2.5-1.5B-Instruct", "chat", "letter"),
        ("meta-llama/Llama-2-7b-chat-hf", "chat", "letter"),
    ],
)
def test_resolved_prompt_format_and_scoring(clean, model, fmt, scoring):
    s = load_settings({"model": model})
    assert s.resolved_prompt_format() == fmt
    assert s.resolved_scoring() == scoring
    # explicit choices win over auto
    s = load_settings(
        {
            "model": model,
            "prompt_format": "plain" if fmt == "chat" else "chat",
            "scoring": "letter" if scoring == "cloze" else "cloze",
        }
    )
    assert s.resolved_prompt_format() != fmt and s.resolved_scoring() != scoring


def test_as_dict_has_resolved_values(clean):
    d = load_settings({"device": "cpu"}).as_dict()
    assert d["resolved"] == {"device": "cpu", "dtype": "float32", "prompt_format": "plain", "scoring": "cloze"}
    json.dumps(d)


# ---------------------------------------------------------------- CLI (no model; one real subprocess)


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
    env.update(UNLEARN_NO_HUB="1", PYTHONWARNINGS="ignore", **extra)
    return env


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "unlearn_core", *args],
        cwd=ROOT,
        env=_cli_env(**env),
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def in_process(monkeypatch, capsys):
    """The CLI in this process with the subprocess runs' environment: no UNLEARN_* settings but
    UNLEARN_NO_HUB, run from the repository root; ``in_process(*args, **env)``."""
    for k in list(os.environ):
        if k.startswith("UNLEARN_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("UNLEARN_NO_HUB", "1")
    monkeypatch.chdir(ROOT)

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return run_cli(capsys, *args)

    return run


def test_cli_info_json(shared_data):
    r = _run("info", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["settings"]["model"] == EMBEDDED_MODEL
    assert out["settings"]["saes"] == [EMBEDDED_SAE]
    assert out["settings"]["resolved"]["scoring"] == "cloze"
    src = out["data_sources"]
    assert src["wmdp-bio"] == str(shared_data / "wmdp" / "bio_questions.json")
    assert src["mmlu"] == str(shared_data / "mmlu" / "test")
    assert {"webtext", "wikitext", "sherlock", "pile"} <= set(src)


def test_cli_info_flags_and_env_reach_settings(in_process):
    r = in_process(
        "info",
        "--json",
        "--scoring",
        "letter",
        "--sae",
        "embedded",
        "--sae",
        "/tmp/other",
        UNLEARN_PROMPT_FORMAT="chat",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["settings"]
    assert s["scoring"] == "letter" and s["prompt_format"] == "chat"
    assert s["saes"] == ["embedded", "/tmp/other"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (("info", "--prompt-format", "bogus"), "argument --prompt-format: invalid choice: 'bogus'"),
        (("mcq", "--mode", "bogus"), "argument --mode: invalid choice: 'bogus'"),
    ],
)
def test_cli_argparse_errors_exit_2_cleanly(args, needle):
    r = _run(*args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    "args,env,needle",
    [
        (("info",), {"UNLEARN_SCORING": "bogus"}, "error: setting scoring='bogus'"),
        (
            ("info", "--config", "/nonexistent/unlearn.toml"),
            {},
            "error: settings file '/nonexistent/unlearn.toml' not found",
        ),
        (("info", "--device", "cuda:0"), {}, "error: device 'cuda:0' requested but CUDA is not available"),
    ],
)
def test_cli_settings_errors_are_clean(args, env, needle, in_process):
    if "cuda" in args[-1]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    r = in_process(*args, **env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
