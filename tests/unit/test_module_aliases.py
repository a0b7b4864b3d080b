"""One alias, one module, project-wide: ``C`` is the disk cache wherever it appears.

A reader who learnt ``C.`` in the engine must not meet a different ``C.`` in the app, so a
module alias (``from unlearn_core.core import cache as C``) names the same module in every file
of the package, the app, its pages, the tests and the benchmarks.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
WHERE = ("unlearn_core", "pages", "tests", "bench", "app.py")


def is_module(name: str, root: Path) -> bool:
    """A module of this repository (the package, or a helper file next to the tests/benchmarks)."""
    parts = name.split(".")
    if parts[0] == "unlearn_core":
        base = root.joinpath(*parts)
        return base.with_suffix(".py").exists() or (base / "__init__.py").exists()
    return len(parts) == 1 and any((root / d / f"{name}.py").exists() for d in ("tests", "bench"))


def module_aliases(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """alias -> {module: [files that import it under that alias]} for this repository's modules."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    files = [
        p for w in WHERE for p in ([root / w] if w.endswith(".py") else sorted((root / w).rglob("*.py"))) if p.exists()
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            pairs = []
            if isinstance(node, ast.Import):
                pairs = [(a.name, a.asname) for a in node.names if a.asname]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                pairs = [(f"{node.module}.{a.name}", a.asname) for a in node.names if a.asname]
            for module, alias in pairs:
                if is_module(module, root):
                    out[alias][module].append(str(path.relative_to(root)))
    return out


def test_every_module_alias_names_one_module():
    aliases = module_aliases()
    assert aliases["C"].keys() == {"unlearn_core.core.cache"}  # the walk found the package's aliases
    clashes = {a: dict(m) for a, m in aliases.items() if len(m) > 1}
    assert not clashes, f"aliases naming more than one module: {clashes}"


def test_the_check_sees_one_alias_for_two_modules(tmp_path):
    pkg = tmp_path / "unlearn_core"
    (pkg / "core").mkdir(parents=True)
    (pkg / "ui").mkdir()
    for p in (
        pkg / "__init__.py",
        pkg / "core" / "__init__.py",
        pkg / "core" / "cache.py",
        pkg / "ui" / "__init__.py",
        pkg / "ui" / "common.py",
    ):
        p.write_text("")
    (pkg / "a.py").write_text("from unlearn_core.core import cache as C\nimport numpy as C\n")
    (pkg / "b.py").write_text("def f():\n    from unlearn_core.ui import common as C\n")
    assert set(module_aliases(tmp_path)["C"]) == {"unlearn_core.core.cache", "unlearn_core.ui.common"}
