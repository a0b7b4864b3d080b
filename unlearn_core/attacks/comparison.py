"""The defences compared in one table on a target's held-out half: clean, the static and gated
clamps (and the target's own mode), RMU and the persistent method; accuracy on the known questions,
loss added, held-out forget-domain perplexity, and every attack's recovery.

Why one command: a persistent edit is only worth its training if it forgets as the clamp does, keeps
as much, and holds where the clamp does not (relearning on the weights). The rows share one known
filter, one set of loss windows and one attack bench run, so they compare. Settings are chosen on
the train half (``evaluation.experiments.persist.search``, ``bench/persist_dev_grid.py``).
"""

from __future__ import annotations

import time

from unlearn_core.evaluation.experiments.gate import known_sets
from unlearn_core.evaluation.experiments.rmu import card_summary, variant_row
from unlearn_core.evaluation.targets import Target
from unlearn_core.training import persist as P
from unlearn_core.training import variants as V


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


CLAMP_MODES = ("clamp", "gated")


def clamp_rows(engine, target: Target, loss_tokens: int, stage) -> tuple[list[dict], dict]:
    """The static and gated clamps (and the target's own mode, if another) at the target's N and c."""
    from unlearn_core.evaluation.experiments.gate import compare as clamp_compare

    modes = tuple(dict.fromkeys((*CLAMP_MODES, target.intervention.mode)))
    pct = target.intervention.gate_percentile
    r = clamp_compare(engine, target, [target.intervention.c], None, pct, loss_tokens, modes, stage=stage)
    return r["rows"], r


def perplexities(engine, target: Target, rows: list[dict], n_tokens: int, tick) -> dict:
    """Perplexity on the target's held-out forget-domain text: clean, each clamp row with its
    intervention, each variant row with its weights."""
    from unlearn_core.evaluation.metrics import perplexity
    from unlearn_core.evaluation.targets import default_intervention
    from unlearn_core.features.stats import corpus_docs
    from unlearn_core.method.interventions import Intervention

    docs = corpus_docs(engine, target.ppl_corpus)
    base = default_intervention(engine, target)
    ppl = lambda ivs: perplexity(engine, docs, ivs, n_tokens=n_tokens)["perplexity"]  # noqa: E731
    out = {"corpus": target.ppl_corpus, "tokens": n_tokens}
    for row in rows:
        if row.get("variant") is not None or row["method"] == "clean":
            with V.applied(engine, row.get("variant")):
                row["ppl"] = ppl(None)
        else:
            iv = Intervention(base.sae_key, base.features[: row["n"]], float(row["c"]), row["method"], row["tau"])
            row["ppl"] = ppl([iv])
        tick(1)
    return out


def attack_table(engine, target: Target, defences: list[str], attacks: str, stage) -> dict:
    """The attack bench on every defence (``none``: the clean model, a control)."""
    from unlearn_core.attacks.bench import parse_attacks, run_bench
    from unlearn_core.attacks.defences import parse_defences

    ds = parse_defences(engine, target, ",".join(defences))
    return run_bench(engine, target, ds, parse_attacks(attacks), stage=stage)


def compare(
    engine,
    target: Target,
    name: str,
    cfg: P.PersistConfig,
    rmu_name: str | None = None,
    attacks: str = "",
    loss_tokens: int = 10_000,
    ppl_tokens: int = 2_000,
    train_progress=None,
    stage=None,
) -> dict:
    """Train (or reuse, or resume) persistent run ``name``; then the table's rows (clean, clamps, RMU
    ``rmu_name`` when given, the persistent run) and the attack bench on the same defences."""
    t0 = time.time()
    tick0 = stage or (lambda what, n: lambda k=1: None)
    card = P.train(engine, name, target, cfg, progress=train_progress)
    rows, clamp = clamp_rows(engine, target, loss_tokens, stage)
    sets = known_sets(engine, target)
    variants = [("clean", "base")] + ([("rmu", f"rmu:{rmu_name}")] if rmu_name else []) + [("persist", P.PREFIX + name)]
    tick = tick0("clean, RMU and persistent rows", len(variants))
    for label, v in variants:
        row = variant_row(engine, target, v, sets, loss_tokens, v)
        row["method"] = label
        row["variant"] = None if v == "base" else v
        rows.insert(0, row) if label == "clean" else rows.append(row)
        tick(1)
    r = {
        "target": target.name,
        "n_known": {k: len(q) for k, q in sets.items()},
        "features": clamp["features"],
        "c": target.intervention.c,
        "gates": clamp["gates"],
        "rows": rows,
        "persist": card_summary(card) | {"features": card["features"], "selection": card["selection"]},
    }
    if rmu_name:
        r["rmu"] = card_summary(V.load(engine.settings.cache_dir, f"rmu:{rmu_name}")[1])
    if ppl_tokens and target.ppl_corpus:
        r["ppl"] = perplexities(engine, target, rows, ppl_tokens, tick0("perplexity per row", len(rows)))
    if attacks:
        defences = [m for m in dict.fromkeys((*CLAMP_MODES, target.intervention.mode))]
        defences += ([f"rmu:{rmu_name}"] if rmu_name else []) + [P.PREFIX + name, "none"]
        r["attacks"] = attack_table(engine, target, defences, attacks, stage)
    r["seconds"] = round(time.time() - t0, 1)
    return r


def recovery_cells(r: dict) -> tuple[list[str], dict]:
    """The attack columns and, per defence, its 'recovered/forgotten' cell of each."""
    cols: list[str] = []
    cells: dict = {}
    for x in (r.get("attacks") or {}).get("rows", []):
        col = x["attack"]  # "few_shot:8", "relearn:facts": the bench's row label
        cols.append(col) if col not in cols else None
        cells.setdefault(x["defence"], {})[col] = (
            "—" if not x["n_forgotten"] else f"{x['n_recovered']}/{x['n_forgotten']} ({x['recovery_rate']:.2f})"
        )
    return cols, cells


def markdown(r: dict) -> str:
    retain_names = [k for k in r["n_known"] if k != "forget"]
    cols, cells = recovery_cells(r)
    head = (
        f"target `{r['target']}`: held-out known questions "
        + ", ".join(f"{k} {v}" for k, v in r["n_known"].items())
        + f"; clamps on features {r['features']} at c = {r['c']:g}; persistent run on features "
        f"{r['persist']['features']} ({r['persist']['selection']}), {r['persist']['config']}, "
        f"{r['persist']['steps_done']} steps, {r['persist']['seconds']:.0f} s of training on {r['persist']['cpu']}"
    )
    if "ppl" in r:
        head += f"; perplexity on {r['ppl']['tokens']} tokens of `{r['ppl']['corpus']}`"
    lines = [head, ""]
    cols_acc = ["method", "forget acc."] + [f"retain: {k}" for k in retain_names] + ["loss added", "ppl"]
    lines += ["| " + " | ".join(cols_acc) + " |", "|" + " --- |" * len(cols_acc)]
    for row in r["rows"]:
        label = row.get("variant") or (row["method"] if row["method"] == "clean" else f"{row['method']} N={row['n']}")
        vals = [label, _f(row["forget"])] + [_f(row["retain"].get(k)) for k in retain_names]
        vals += [_f(row["loss_added"]), "—" if row.get("ppl") is None else f"{row['ppl']:.1f}"]
        lines.append("| " + " | ".join(vals) + " |")
    if cols:
        a = r["attacks"]
        lines += [
            "",
            f"Attack bench ({a['part']} part, probes `{a['probes']}`, {a['n_known_forget']} known forget facts, "
            f"{a['wall_s']:.0f} s): recovered / forgotten (share). `none` is the clean model: nothing to recover.",
            "",
            "| defence | " + " | ".join(cols) + " |",
            "|" + " --- |" * (len(cols) + 1),
        ]
        for d, row in cells.items():
            lines.append(f"| {d} | " + " | ".join(row.get(c, "") for c in cols) + " |")
    return "\n".join(lines)
