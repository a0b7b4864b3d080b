"""Every generated page of the documentation site, from its one source (issue 38):

- ``docs/reference/cli.md``: the CLI's argparse parser (``unlearn_core.cli.build_parser``);
- ``docs/reference/api.md``: ``docs/openapi.json`` (``python -m unlearn_core.server.openapi``);
- ``docs/results/NAME.md``: ``docs/results/NAME.json``, by the renderer its ``meta.kind`` names
  (``unlearn_core.cli.pages``, the function the CLI's ``--out`` writes with), first line the
  provenance (command, commit, machine, date) from its ``meta``;
- ``docs/results/index.md``: every result by kind, then the hand-written reports (``docs/reports``);
- the ``Results`` section of ``mkdocs.yml``'s nav, between ``# gen:nav results`` and ``# gen:end``;
- in README.md and every page under docs/, each block ``<!-- gen:table NAME -->`` ...
  ``<!-- gen:end -->`` (NAME's provenance line and tables) or ``<!-- gen:table NAME#SECTION -->``
  (one part: for ``persist compare``, ``methods`` or ``attacks``).

    python scripts/gen_docs.py            # (re)write what differs
    python scripts/gen_docs.py --check    # write nothing; exit 1 naming every file that differs (CI)
    python scripts/gen_docs.py --root DIR # another checkout (the tests run it on a copy)

Why generated: a table copied by hand drifts from its data; CI compares each file with what this
script makes. Output is deterministic (no dates, no terminal widths).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]  # the package, and gen_docs_reference next to this file

from gen_docs_reference import CODE, GENERATED_NOTE, api_reference, cli_reference, esc  # noqa: E402

from unlearn_core.cli import pages  # noqa: E402
from unlearn_core.core.provenance import provenance_line  # noqa: E402

START = re.compile(r"^<!-- gen:table (\S+?) -->\s*$")
END = "<!-- gen:end -->"
NAV_START, NAV_END = "# gen:nav results", "# gen:end"


# ---------------------------------------------------------------- results
def load_results(root: Path) -> dict[str, dict]:
    """docs/results/NAME.json by NAME; each must name its renderer (``meta.kind``)."""
    out = {}
    for p in sorted((root / "docs" / "results").glob("*.json")):
        r = json.loads(p.read_text())
        if not isinstance(r, dict) or not isinstance(r.get("meta"), dict):
            raise ValueError(f"{p.relative_to(root)}: no `meta` object (kind, command, commit, machine, date)")
        try:
            pages.kind_of(r)
        except ValueError as e:
            raise ValueError(f"{p.relative_to(root)}: {e}") from None
        out[p.stem] = r
    return out


def result_page(name: str, r: dict) -> str:
    return pages.page(r, f"docs/results/{name}") + "\n"


def report_title(path: Path) -> str:
    """A report's H1 up to its first colon, else its file name."""
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].split(": ")[0].strip()
    return path.stem


def by_kind(results: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """(kind, names) in the order of ``pages.KINDS``, names sorted."""
    return [
        (k, sorted(n for n, r in results.items() if r["meta"]["kind"] == k))
        for k in pages.KINDS
        if any(r["meta"]["kind"] == k for r in results.values())
    ]


def results_index(results: dict[str, dict], reports: list[Path]) -> str:
    out = [
        "# Results",
        "",
        GENERATED_NOTE.format(source="docs/results/*.json and docs/reports/*.md"),
        "",
        "Each page below is generated from the JSON next to it in `docs/results/`, the file a command's "
        "`--out` wrote. Its first line names the command, commit, machine and date, from the JSON's `meta`; "
        "then comes the context the run's author wrote (`meta.note`), then the tables of the project's own "
        "renderer for that kind of result (`meta.kind`, `unlearn_core/cli/pages.py`). "
        "`python scripts/gen_docs.py` regenerates them; `python scripts/gen_docs.py --check` (CI) fails "
        "when a committed page differs from what its JSON makes.",
        "",
        "A page of the site or the README shows a result's tables, with their provenance line, in a block the "
        "script fills (`NAME#methods` or `NAME#attacks`: one part of a `persist compare` result):",
        "",
        "```markdown",
        "<!-- gen:table persist_bio-basics#methods -->",
        END,
        "```",
    ]
    for kind, names in by_kind(results):
        out += ["", f"## {pages.KINDS[kind][0]}", ""]
        out += [f"- [{n}]({n}.md): {provenance_line(results[n]['meta'])}" for n in names]
    out += ["", "## Reports", "", "Hand-written reports: their figures are not regenerated.", ""]
    out += [f"- [{esc(report_title(p))}](../reports/{p.name})" for p in reports]
    return "\n".join(out) + "\n"


def nav_lines(results: dict[str, dict], reports: list[Path], indent: str) -> list[str]:
    """The nav entries of the Results section (YAML, at ``indent``)."""
    out = [f"{indent}{NAV_START}: written by scripts/gen_docs.py (docs/results/*.json, docs/reports/*.md)"]
    out.append(f"{indent}- results/index.md")
    for kind, names in by_kind(results):
        out.append(f"{indent}- {json.dumps(pages.KINDS[kind][0].replace('`', ''))}:")
        out += [f"{indent}    - {json.dumps(n)}: results/{n}.md" for n in names]
    out.append(f"{indent}- Reports:")
    out += [f"{indent}    - {json.dumps(report_title(p), ensure_ascii=False)}: reports/{p.name}" for p in reports]
    return out + [f"{indent}{NAV_END}"]


def with_nav(text: str, results: dict[str, dict], reports: list[Path]) -> str:
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip().startswith(NAV_START)]
    if len(starts) != 1:
        raise ValueError(f"mkdocs.yml: needs one `{NAV_START}` line under `- Results:` ({len(starts)} found)")
    i = starts[0]
    j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == NAV_END), None)
    if j is None:
        raise ValueError(f"mkdocs.yml: `{NAV_START}` has no `{NAV_END}` after it")
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    return "\n".join(lines[:i] + nav_lines(results, reports, indent) + lines[j + 1 :]) + "\n"


# ---------------------------------------------------------------- include blocks
def include(name: str, results: dict[str, dict]) -> str:
    """What a ``gen:table NAME[#SECTION]`` block holds: the provenance line, then the tables."""
    base, _, section = name.partition("#")
    if base not in results:
        raise ValueError(f"gen:table {name}: no docs/results/{base}.json (known: {', '.join(sorted(results))})")
    r = results[base]
    return provenance_line(r["meta"]) + "\n\n" + pages.body(r, f"docs/results/{base}", section or None)


def fill_includes(text: str, results: dict[str, dict], where: str) -> str:
    """Every block refilled; markers count at the start of a line, outside fenced code."""
    lines, out, fence, i = text.split("\n"), [], None, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            mark = stripped[:3]
            fence = None if fence == mark else (fence or mark)
        m = START.match(line) if fence is None else None
        out.append(line)
        i += 1
        if not m:
            continue
        end = next((k for k in range(i, len(lines)) if lines[k].strip() == END), None)
        if end is None:
            raise ValueError(f"{where}:{i}: `<!-- gen:table {m.group(1)} -->` has no `{END}` after it")
        try:
            out += ["", include(m.group(1), results), "", END]
        except ValueError as e:
            raise ValueError(f"{where}:{i}: {e}") from None
        i = end + 1
    return "\n".join(out)


# ---------------------------------------------------------------- the whole set
def generated(root: Path) -> dict[Path, str]:
    """Every generated file's path and content (nothing written)."""
    results = load_results(root)
    reports = sorted((root / "docs" / "reports").glob("*.md"))
    out = {
        root / "docs/reference/cli.md": cli_reference(),
        root / "docs/reference/api.md": api_reference(json.loads((root / "docs/openapi.json").read_text())),
        root / "docs/results/index.md": results_index(results, reports),
        root / "mkdocs.yml": with_nav((root / "mkdocs.yml").read_text(), results, reports),
    }
    out.update({root / f"docs/results/{n}.md": result_page(n, r) for n, r in results.items()})
    for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        if path in out or not path.exists():
            continue
        text = path.read_text()
        if any(START.match(ln) for ln in text.splitlines()):
            out[path] = fill_includes(text, results, str(path.relative_to(root)))
    return out


def strays(root: Path, made: dict[Path, str]) -> list[str]:
    """Pages in docs/results that no JSON makes (a hand-written report belongs in docs/reports)."""
    return [
        f"{p.relative_to(root)}: no {p.stem}.json makes it (move a hand-written report to docs/reports/)"
        for p in sorted((root / "docs" / "results").glob("*.md"))
        if p not in made
    ]


LINK = re.compile(r"\]\(\s*<?([^)\s>]+)|<(https?://[^>\s]+)>")
PRIVATE_HOST = re.compile(r"https://(localhost|127\.|10\.|192\.168\.|0\.0\.0\.0|[^/]*\.local\b|[^/]*example\.)")
FENCED = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def bad_links(root: Path, made: dict[Path, str]) -> list[str]:
    """Links of README.md and docs/ that leave the repository for anything but a public https
    source (a private host, plain http, another scheme, a path outside the checkout)."""
    out = []
    for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        if not path.exists():
            continue
        text = CODE.sub("", FENCED.sub("", made.get(path) or path.read_text()))
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if target.startswith(("#", "mailto:")):
                continue
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                bad = not target.startswith("https://") or PRIVATE_HOST.match(target)
            else:
                bad = not (path.parent / target.split("#")[0]).resolve().is_relative_to(root)
            if bad:
                out.append(f"{path.relative_to(root)}: link {target!r} leaves the repository for a non-public place")
    return out


def diff_head(path: Path, want: str, lines: int = 12) -> str:
    """The start of the difference, for a CI log: committed (-) against generated (+)."""
    have = path.read_text().splitlines() if path.exists() else []
    diff = list(difflib.unified_diff(have, want.splitlines(), "committed", "generated", lineterm="", n=0))
    return "\n".join("    " + line[:200] for line in diff[2 : 2 + lines])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    ap.add_argument("--root", type=Path, default=REPO, help="the checkout (default: this script's)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    try:
        made = generated(root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stale = [p for p, text in made.items() if not p.exists() or p.read_text() != text]
    problems = strays(root, made) + bad_links(root, made)
    if args.check:
        for p in stale:
            print(f"{p.relative_to(root)}: differs from what scripts/gen_docs.py makes", file=sys.stderr)
            print(diff_head(p, made[p]), file=sys.stderr)
        for line in problems:
            print(line, file=sys.stderr)
        if stale or problems:
            print("run `python scripts/gen_docs.py` and commit the result", file=sys.stderr)
            return 1
        return 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(made[p])
        print(f"wrote {p.relative_to(root)}")
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
