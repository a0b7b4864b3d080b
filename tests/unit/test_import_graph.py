"""The package's import graph is a tree (a DAG): no two modules import each other, not even
through an import inside a function. A cycle hidden in a lazy import still ties two modules'
jobs together (mcq and fastpath did, until their shared prompts moved to ``prompts``)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
PKG = "unlearn_core"


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for p in sorted((root / PKG).rglob("*.py")):
        name = ".".join(p.relative_to(root).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (top level, functions, TYPE_CHECKING)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else node.module
            )
            deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
    return {d for d in deps if d in mods and d not in (name, PKG)}


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    return {name: imported(name, path, mods) for name, path in mods.items()}


def test_the_package_has_no_import_cycle():
    mods = modules()
    assert len(mods) > 20 and f"{PKG}.evaluation.mcq" in mods  # the walk found the package
    try:
        list(graphlib.TopologicalSorter(graph(mods)).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_check_sees_a_cycle_through_a_function_level_import(tmp_path):
    """The checker itself: two modules importing each other, one of them inside a function."""
    pkg = tmp_path / PKG
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from . import a\n    return a\n")
    mods = modules(tmp_path)
    g = graph(mods)
    assert g[f"{PKG}.a"] == {f"{PKG}.b"} and g[f"{PKG}.b"] == {f"{PKG}.a"}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(g).static_order())


ENGINE_LAYERS = ("core", "data", "model", "method", "features", "evaluation", "training", "attacks")


def test_the_engine_layers_never_import_the_server_the_cli_or_the_ui():
    """The engine is reachable from the CLI, the server and the tests alike; it never reaches back."""
    mods = modules()
    g = graph(mods)
    upward = sorted(
        f"{m} -> {d}"
        for m, deps in g.items()
        for d in deps
        if m.split(".")[1:2] and m.split(".")[1] in ENGINE_LAYERS and d.split(".")[1] in ("server", "cli", "ui")
    )
    assert upward == []
    assert any(m.startswith(f"{PKG}.evaluation.") for m in mods) and any(m.startswith(f"{PKG}.ui.") for m in mods)


# The layers, lowest first; a module imports only from its own layer or those below. The SAE
# loader and the intervention hooks sit under the rest of `model` because the Engine applies them.
LAYERS = (
    ("core",),
    ("data",),
    ("model.saes", "method.modes", "method.interventions"),
    ("model",),
    ("features",),
    ("method",),
    ("evaluation",),
    ("training",),
    ("evaluation.experiments",),
    ("attacks",),
    ("server",),
    ("ui",),
    ("cli",),
)


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest prefix naming ``module`` (None: the package root, __main__)."""
    rel = module.removeprefix(f"{PKG}.")
    hits = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes if rel == p or rel.startswith(p + ".")]
    return max(hits)[1] if hits else None


def test_layers_never_import_upward():
    mods = modules()
    g = graph(mods)
    unplaced = sorted(m for m in mods if layer_of(m) is None and m not in (PKG, f"{PKG}.__main__"))
    assert unplaced == [], "every module belongs to a layer"
    upward = sorted(
        f"{m} -> {d}"
        for m, deps in g.items()
        for d in deps
        if None not in (layer_of(m), layer_of(d)) and layer_of(d) > layer_of(m)
    )
    assert upward == []
    assert layer_of(f"{PKG}.method.interventions") < layer_of(f"{PKG}.model.engine") < layer_of(f"{PKG}.method.gate")
