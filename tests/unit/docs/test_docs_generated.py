"""The generated documentation (issue 38): ``scripts/gen_docs.py --check`` passes on the repository,
and fails, naming the file, when a results JSON, a generated table or an include block drifts; the
references cover the whole parser and the whole OpenAPI contract; a CLI ``--out`` result carries
its provenance. No model: the one command run fakes its computation."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import types
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


@pytest.fixture(scope="module")
def gd():
    """scripts/gen_docs.py as a module (run in this process: the renderers import once)."""
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def copy(tmp_path, gd) -> Path:
    """What the script reads and writes, copied (no images or plots), and regenerated."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png", "*.html", "*.gif"))
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    gd.main(["--root", str(tmp_path)])
    assert gd.main(["--root", str(tmp_path), "--check"]) == 0
    return tmp_path


def check(gd, root: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = gd.main(["--root", str(root), "--check"])
    return code, capsys.readouterr().err


def test_the_committed_generated_files_are_current(gd, capsys):
    code, err = check(gd, ROOT, capsys)
    assert code == 0, err


def test_a_changed_number_in_a_results_json_fails_the_check(gd, copy, capsys):
    p = copy / "docs/results/book.json"
    r = json.loads(p.read_text())
    r["conditions"][0]["ppl_wikitext_heldout"] += 1.0  # 26.92 -> 27.92
    p.write_text(json.dumps(r, indent=2))
    code, err = check(gd, copy, capsys)
    assert code == 1 and "docs/results/book.md" in err
    assert "docs/results/wmdp.md" not in err  # only what the change touches


def test_a_hand_edited_table_fails_the_check(gd, copy, capsys):
    p = copy / "docs/results/wmdp.md"
    text = p.read_text()
    p.write_text(text.replace("| 4498 | 0.2081 |", "| 4498 | 0.2082 |", 1))
    assert p.read_text() != text
    code, err = check(gd, copy, capsys)
    assert code == 1 and "docs/results/wmdp.md" in err


def test_a_stale_include_block_fails_the_check_and_is_refilled(gd, copy, capsys):
    page = copy / "docs" / "concepts" / "included.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("# A page\n\n<!-- gen:table persist_sherlock#methods -->\n| old | table |\n<!-- gen:end -->\n")
    code, err = check(gd, copy, capsys)
    assert code == 1 and "docs/concepts/included.md" in err
    assert gd.main(["--root", str(copy)]) in (0, 1)
    text = page.read_text()
    assert "| old | table |" not in text and text.count("Command: `python -m unlearn_core persist compare") == 1
    assert "Attack bench" not in text  # the methods section only
    assert check(gd, copy, capsys)[0] == 0


def test_an_unknown_include_name_is_an_error_that_says_which(gd, copy, capsys):
    (copy / "docs" / "typo.md").write_text("<!-- gen:table persist_nowhere -->\n<!-- gen:end -->\n")
    code, err = check(gd, copy, capsys)
    assert code == 2 and "docs/typo.md:1" in err and "no docs/results/persist_nowhere.json" in err
    (copy / "docs" / "typo.md").write_text("<!-- gen:table persist_sherlock#nope -->\n<!-- gen:end -->\n")
    code, err = check(gd, copy, capsys)
    assert code == 2 and "no section 'nope'" in err and "attacks, methods" in err


def test_a_results_page_without_json_fails_the_check(gd, copy, capsys):
    (copy / "docs/results/handwritten.md").write_text("# notes\n")
    code, err = check(gd, copy, capsys)
    assert code == 1 and "docs/results/handwritten.md: no handwritten.json" in err


def test_a_link_out_of_the_repository_to_a_non_public_place_fails_the_check(gd, copy, capsys):
    (copy / "docs" / "links.md").write_text(
        "[paper](https://arxiv.org/abs/2410.19278) [page](concepts/../results/index.md) `[code](http://x)`\n"
    )
    assert check(gd, copy, capsys)[0] == 0  # public https, inside the repository, and code are fine
    (copy / "docs" / "links.md").write_text("[app](http://127.0.0.1:8501) [data](../../shared/data/x.csv)\n")
    code, err = check(gd, copy, capsys)
    assert code == 1 and "'http://127.0.0.1:8501'" in err and "'../../shared/data/x.csv'" in err


def test_every_results_page_starts_with_its_provenance_line(gd):
    """Its title, then the provenance line: MkDocs would take a first line "Command: ..." for page
    metadata and drop it from the site (the built page is checked too, in the browser bench)."""
    for p in sorted((ROOT / "docs/results").glob("*.json")):
        meta = json.loads(p.read_text())["meta"]
        title, _, first = p.with_suffix(".md").read_text().splitlines()[:3]
        assert title == f"# {p.stem}", p.name
        assert first.startswith("Command: ") and " · commit " in first, p.name
        assert (meta["date"] in first) and (meta["machine"] in first), p.name


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,)
                yield from _commands(sub, path + (name,))


def test_the_cli_reference_names_every_command_of_the_parser():
    from unlearn_core.cli import build_parser

    text = (ROOT / "docs/reference/cli.md").read_text()
    commands = list(_commands(build_parser()))
    assert len(commands) > 25 and ("persist", "compare") in commands
    missing = [" ".join(c) for c in commands if f"`unlearn {' '.join(c)}`" not in text]
    assert missing == []


def test_the_api_reference_names_every_path_of_openapi_json():
    spec = json.loads((ROOT / "docs/openapi.json").read_text())
    text = (ROOT / "docs/reference/api.md").read_text()
    ops = [(m.upper(), p) for p, ms in spec["paths"].items() for m in ms]
    assert len(ops) > 30
    assert [op for op in ops if f"`{op[0]} {op[1]}`" not in text] == []
    assert [s for s in spec["components"]["schemas"] if f"{{#schema-{s}}}" not in text] == []


def test_provenance_names_command_commit_machine_and_date():
    from unlearn_core.core.provenance import provenance, provenance_line

    meta = provenance("attack", ["attack", "--target", "x y"], started=0.0)
    assert meta["kind"] == "attack" and meta["command"] == "python -m unlearn_core attack --target 'x y'"
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?|unknown", meta["commit"])
    assert "cores" in meta["machine"] and re.fullmatch(r"\d{4}-\d{2}-\d{2}", meta["date"])
    line = provenance_line({"command": "not recorded", "commit": "not recorded", "machine": "M", "date": "D"})
    assert line == "Command: not recorded · commit not recorded · M · D"


def test_persist_compare_out_writes_the_page_gen_docs_makes(tmp_path, capsys, monkeypatch):
    """`persist compare --out` (its computation faked: no model) stamps the JSON's meta and writes
    the page scripts/gen_docs.py would make of that JSON."""
    from cli_helpers import run_cli

    from unlearn_core.attacks import comparison as CMP
    from unlearn_core.cli import pages
    from unlearn_core.cli import persist as cli_persist

    saved = json.loads((ROOT / "docs/results/persist_sherlock.json").read_text())
    saved.pop("meta")
    monkeypatch.setattr(CMP, "compare", lambda *a, **k: json.loads(json.dumps(saved)))
    target = types.SimpleNamespace(name="sherlock")
    monkeypatch.setattr(
        cli_persist,
        "training_command",
        lambda args, sub, config, bar, handlers, lister: handlers[sub](
            args, None, target, types.SimpleNamespace(steps=1), lambda rec: None
        ),
    )
    out = tmp_path / "cmp"
    r = run_cli(capsys, "persist", "compare", "--name", "p", "--attacks", "filler", "--out", str(out))
    assert r.returncode == 0, r.stderr
    written = json.loads(out.with_suffix(".json").read_text())
    meta = written["meta"]
    assert list(written)[0] == "meta" and {"kind", "command", "commit", "machine", "date", "wall"} <= set(meta)
    assert meta["kind"] == "persist compare"
    assert meta["command"] == f"python -m unlearn_core persist compare --name p --attacks filler --out {out}"
    assert {k: v for k, v in written.items() if k != "meta"} == saved
    page = out.with_suffix(".md").read_text()
    assert page == pages.page(written, str(out)) + "\n"
    assert page.splitlines()[0] == f"# {out.name}"
    assert page.splitlines()[2].startswith("Command: `python -m unlearn_core persist compare")
    assert page.endswith(CMP.markdown(saved) + "\n")


def test_the_built_site_shows_every_results_page_with_its_provenance(tmp_path):
    """``mkdocs build --strict`` of the repository, then each result's page as HTML: its provenance
    (the command and the commit) is on the page, not swallowed as metadata (a nav page that does not
    exist fails the strict build)."""
    import subprocess
    import sys

    site = tmp_path / "site"
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for j in sorted((ROOT / "docs/results").glob("*.json")):
        meta = json.loads(j.read_text())["meta"]
        html = (site / "results" / j.stem / "index.html").read_text()
        assert "Command:" in html, j.name
        commit = meta["commit"]
        assert (f"<code>{commit}</code>" if commit != "not recorded" else "commit not recorded") in html, j.name
