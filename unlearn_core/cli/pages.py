"""A result's markdown page, made from its JSON alone: the provenance line (``meta``: command,
commit, machine, date), the note, then the tables of the renderer ``meta.kind`` names.

One function for both writers, so a page never drifts from its data: the CLI's ``--out`` writes
``<out>.md`` with :func:`page`, and ``scripts/gen_docs.py`` regenerates ``docs/results/*.md`` (and
the ``<!-- gen:table NAME#SECTION -->`` blocks of the docs and README) with the same call.
Renderers import lazily: the CLI's start-up stays light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from unlearn_core.core.provenance import provenance, provenance_line

Render = Callable[[dict, "str | None"], str]


def _attack(r: dict, out: str | None) -> str:
    from unlearn_core.attacks.report import markdown

    return markdown(r)


def _gate(r: dict, out: str | None) -> str:
    """Static vs gated; the filler probe when it ran, and where its curve was written."""
    from unlearn_core.evaluation.experiments import gate as GX

    md = "## static vs gated\n\n" + GX.markdown(r)
    if r.get("probe"):
        md += "\n\n## robustness: benign filler around the forget questions\n\n" + GX.probe_markdown(r["probe"])
        if out:
            md += f"\n\nThe curve: {Path(out).with_suffix('.probe.html')}"
    return md


def _rmu_compare(r: dict, out: str | None) -> str:
    from unlearn_core.evaluation.experiments import gate as GX

    run = r["rmu"]
    return (
        "## RMU vs static and gated clamps\n\n"
        + GX.markdown(r)
        + (
            f"\n\nRMU run `rmu:{run['name']}`: {run['config']}, {run['steps_done']} steps, "
            f"{run['seconds']:.0f} s of training on {run['cpu']}"
        )
    )


def _rmu_search(r: dict, out: str | None) -> str:
    from unlearn_core.evaluation.experiments import rmu as RX

    return RX.search_markdown(r)


def _persist_compare(r: dict, out: str | None) -> str:
    from unlearn_core.attacks import comparison as CMP

    return CMP.markdown(r)


def _persist_methods(r: dict, out: str | None) -> str:
    """The accuracy, loss and perplexity table alone (the renderer without the attack bench)."""
    from unlearn_core.attacks import comparison as CMP

    return CMP.markdown({**r, "attacks": None})


def _persist_attacks(r: dict, out: str | None) -> str:
    """The attack-recovery table alone: what the full page adds to the methods part."""
    full, methods = _persist_compare(r, out), _persist_methods(r, out)
    if not full.startswith(methods) or full == methods:
        raise ValueError("this result has no attack bench (persist compare ran with --attacks '')")
    return full[len(methods) :].lstrip("\n")


def _persist_search(r: dict, out: str | None) -> str:
    from unlearn_core.evaluation.experiments import persist as PX

    return PX.search_markdown(r)


def _targets_sweep(r: dict, out: str | None) -> str:
    from unlearn_core.evaluation.experiments import sweep_report as SWR

    return SWR.markdown(r)


def _wmdp(r: dict, out: str | None) -> str:
    from unlearn_core.evaluation.experiments import writeups as X

    return X.wmdp_markdown(r)


def _book(r: dict, out: str | None) -> str:
    from unlearn_core.evaluation.experiments import writeups as X

    return X.book_markdown(r)


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def _target_eval(r: dict, out: str | None) -> str:
    """``target eval --json``: the default intervention's accuracy on each known set, loss added."""
    iv, d = r["intervention"], r.get("details", {})
    sel = iv.get("selection") or {}
    head = (
        f"target `{r['target']}`: {iv['mode']} of {len(iv['features'])} features of `{iv['sae']}` at c = {iv['c']:g}"
        + (f" (selection: {', '.join(f'{k} {v:g}' for k, v in sel.items())})" if sel else "")
        + f"; {d.get('scoring', '?')} scoring, {'strict ' if d.get('strict_known') else ''}known questions; "
        f"features {iv['features']}"
    )
    sets = [("forget", r["forget"])] + [("retain", s) for s in d.get("retain_sets") or [r["retain"]]]
    lines = [head, "", "| set | questions | known / all | accuracy before | accuracy after |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for role, s in sets:
        lines.append(
            f"| {role} | `{s['questions']}` | {s['n_known']} / {s['n_questions']} | "
            f"{_f(s.get('base_accuracy'))} | {_f(s.get('intervened_accuracy'))} |"
        )
    if r.get("loss_added") is not None:
        lines += ["", f"Loss added on `{d.get('loss_corpus', '?')}` over {d.get('loss_tokens', '?')} tokens: "]
        lines[-1] += f"{r['loss_added']:+.4f} nats."
    return "\n".join(lines)


def _sae_eval(r: dict, out: str | None) -> str:
    """``sae-eval --json``: reconstruction over the pooled corpora, Δloss per corpus, perplexity."""
    lines = [
        f"SAE `{r['sae']}` (d_sae {r.get('d_sae', '?')}) on {', '.join(f'`{c}`' for c in r['corpora'])}: "
        f"L0 {r['l0']:.1f}, explained variance {r['explained_variance']:.3f}, dead {r['dead_fraction']:.1%}, "
        f"dense (> 10% of tokens) {r['dense_fraction']:.2%} over {r['n_tokens']:,} tokens."
    ]
    if r.get("per_corpus"):
        lines += ["", "| corpus | tokens | clean loss | spliced loss | Δloss | loss recovered |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        lines += [
            f"| `{c}` | {x['n_tokens']:,} | {x['clean_loss']:.3f} | {x['spliced_loss']:.3f} | "
            f"{x['delta_loss']:.3f} | {x['loss_recovered']:.3f} |"
            for c, x in r["per_corpus"].items()
        ]
    if r.get("wikitext_ppl"):
        w = r["wikitext_ppl"]
        lines += [
            "",
            f"WikiText-2 (held-out part) perplexity over {w['n_tokens']:,} tokens (windows of {w['ctx']}): "
            f"clean {w['clean']:.2f}, SAE spliced in {w['spliced']:.2f}.",
        ]
    return "\n".join(lines)


def _persist_dev_grid(r: dict, out: str | None) -> str:
    """``bench/persist_dev_grid.py``: one row per setting, each ``over`` applied to ``base``."""
    retain_sets = list(r["runs"][0]["retain"]) if r["runs"] else []
    short = [s.removeprefix("quiz:").replace("@train", "") for s in retain_sets]
    cols = ["forget term", "margin / c", "retain scale", "retain w", "lm w", "dev forget", *short]
    cols += ["retain mean", "loss added", "train s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for run in r["runs"]:
        c = {**r["base"], **run["over"]}
        clamp = run["over"].get("clamp")
        strength = (
            f"margin {c['margin']:g}"
            if c["forget_mode"] == "suppress"
            else (f"c = {clamp:g}" if clamp is not None else f"c = target's ({r['base']['clamp']:g})")
        )
        vals = [c["forget_mode"], strength, c["retain_norm"], f"{c['retain_weight']:g}", f"{c['lm_weight']:g}"]
        vals += [_f(run["forget"])] + [_f(run["retain"][s]) for s in retain_sets]
        vals += [_f(run["retain_mean"]), _f(run["loss"], "+.3f"), f"{run['train_s']:.0f}"]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


# kind -> (the index's heading, the page's renderer, {section: renderer of that part})
KINDS: dict[str, tuple[str, Render, dict[str, Render]]] = {
    "persist compare": (
        "Persistent method vs clamps and RMU (`persist compare`)",
        _persist_compare,
        {"methods": _persist_methods, "attacks": _persist_attacks},
    ),
    "attack": ("Attack bench (`attack`)", _attack, {}),
    "rmu compare": ("RMU vs clamps (`rmu compare`)", _rmu_compare, {}),
    "gate": ("Static vs gated clamp (`gate`)", _gate, {}),
    "targets sweep": ("Targets sweeps (`experiment targets`)", _targets_sweep, {}),
    "target eval": ("A target's default scored (`target eval`)", _target_eval, {}),
    "book": ("Book experiment (`experiment book`)", _book, {}),
    "wmdp": ("WMDP experiment (`experiment wmdp`)", _wmdp, {}),
    "sae eval": ("SAE quality (`sae-eval`)", _sae_eval, {}),
    "persist dev grid": ("Persistent settings, dev grid (`bench/persist_dev_grid.py`)", _persist_dev_grid, {}),
    "rmu search": ("RMU settings search (`rmu search`)", _rmu_search, {}),
    "persist search": ("Persistent settings search (`persist search`)", _persist_search, {}),
}


def kind_of(r: dict) -> str:
    kind = (r.get("meta") or {}).get("kind")
    if kind not in KINDS:
        raise ValueError(f"meta.kind {kind!r} names no renderer; known: {', '.join(sorted(KINDS))}")
    return kind


def body(r: dict, out: str | None = None, section: str | None = None, kind: str | None = None) -> str:
    """The tables of ``r`` (all, or one ``section`` of its kind, ``kind`` or its ``meta.kind``);
    ``out``: where the CLI wrote it."""
    kind = kind or kind_of(r)
    _, render, sections = KINDS[kind]
    if section is None:
        return render(r, out)
    if section not in sections:
        have = ", ".join(sorted(sections)) or "none"
        raise ValueError(f"kind {kind!r} has no section {section!r} (its sections: {have})")
    return sections[section](r, out)


def page(r: dict, out: str | None = None) -> str:
    """The whole page: a title (the result's name), provenance line, note, tables (no trailing
    newline). The title comes first because MkDocs reads a first line "Key: value" as page
    metadata and would drop the provenance line from the site."""
    note = (r.get("meta") or {}).get("note")
    title = f"# {Path(out).name if out else r['meta'].get('kind', 'result')}"
    return "\n\n".join([title, provenance_line(r["meta"]), *([note.strip()] if note else []), body(r, out)])


def stamp(r: dict, kind: str, args) -> dict:
    """Put this command's provenance first in ``r`` (in place: callers keep adding to ``r``)."""
    meta = provenance(kind, getattr(args, "argv", None), started=getattr(args, "started", None))
    rest = {k: v for k, v in r.items() if k != "meta"}
    r.clear()
    r.update({"meta": meta, **rest})
    return r


def save(r: dict, kind: str, args, out: str, restamp: bool = True) -> str:
    """Write ``<out>.json`` and ``<out>.md`` (its page) and return the page; ``r`` is stamped with
    this command's provenance first, unless ``restamp`` is off and it has its own (a re-render)."""
    if restamp or "meta" not in r:
        stamp(r, kind, args)
    md = page(r, out)
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.with_suffix(".json").write_text(json.dumps(r, indent=2))
    p.with_suffix(".md").write_text(md + "\n")
    return md
