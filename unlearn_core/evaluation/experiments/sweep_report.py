"""The targets sweep as a markdown table (``target_sweep.run``'s or ``merge``'s result): the rule in
words, the known-question counts, the choice's margin, a SAEBench-style score, one row per
configuration."""

from __future__ import annotations

from unlearn_core.evaluation.experiments.target_sweep import unlearning_score


def rule_text(r: dict) -> str:
    budget = (
        f" and loss added <= {r['max_loss']:g} nats on `{r['choice_loss_corpus']}`"
        if r.get("max_loss") is not None
        else ""
    )
    ties = (
        f"; ties: less loss added on `{r['choice_loss_corpus']}`, then higher retain"
        if r.get("choice_loss_corpus")
        else "; ties: higher retain"
    )
    pool = " + ".join(f"`{x}`" for x in r.get("choice_retain") or [])
    pool = f" (pooled: {pool})" if pool else ""
    return f"lowest forget accuracy with retain accuracy >= {r['min_retain']}{pool}{budget}{ties}"


def _score_text(r: dict) -> str:
    rows = [row for row in r["rows"][1:] if "n" in row]
    parts = []
    for part in ("train", "heldout"):
        got = unlearning_score(rows, part)
        parts.append(f"{part} half {got[0]:.3f} ({got[1]})" if got else f"{part} half: no row keeps retain >= 0.99")
    return (
        " SAEBench-style unlearning score (best 1 - forget with pooled retain >= 0.99, no loss budget): "
        + "; ".join(parts)
        + "."
    )


def _pooled(r: dict) -> bool:
    """Sweeps before the pooled retain rule (2026-12-07) have no pooled columns: their pages, made
    again from their JSON, must not show empty columns nor a score they could not have."""
    return any("retain_pool@train" in row for row in r["rows"])


def _margin_text(r: dict) -> str:
    m = r.get("margin")
    score = _score_text(r) if _pooled(r) else ""
    if not m:
        return score
    loss = f", {m['loss']:.3f} nats under the loss budget" if m.get("loss") is not None else ""
    return (
        f" Margin of the choice: retain {m['retain']:+.3f} above its floor on "
        f"{r.get('n_retain_pool_train', '?')} known retain questions{loss}."
    ) + score


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def markdown(r: dict) -> str:
    n = r["n_known"]
    choice = bool(r.get("choice_loss_corpus"))  # the choice's own loss column (the tie-break, and any budget)
    pooled = _pooled(r)
    lines = [
        f"Target `{r['target']}`: SAE `{r['sae']}` at `{r['hook']}`, {r['scoring']} scoring, "
        f"{'strict ' if r['strict_known'] else ''}known questions. Forget corpus `{r['forget_corpus']}`"
        + (f" ({r['forget_corpus_note']})" if r["forget_corpus_note"] else "")
        + ".",
        f"Known questions (train half / held-out half): forget `{r['forget_questions']}` {n['forget@train']} / "
        f"{n['forget@heldout']}; "
        + "; ".join(
            f"retain `{s}` {n[f'retain{i}@train']} / {n[f'retain{i}@heldout']}"
            for i, s in enumerate(r["retain_questions"])
        )
        + ".",
        f"Chosen on the train half ({rule_text(r)}): "
        f"**{r['chosen'] or 'none qualifies'}**. Loss added on `{r.get('loss_corpus', 'webtext')}` (held-out; "
        + (f"the choice reads its own column, `{r['choice_loss_corpus']}`) " if choice else "not read by the choice) ")
        + f"over {r['loss_tokens']} tokens; perplexity on "
        f"`{r['ppl_corpus']}` over {r['ppl_tokens']} tokens."
        + "".join(f" Variant `{v}` not swept: {why}." for v, why in r.get("skipped_variants", {}).items())
        + _margin_text(r),
        "",
        "| configuration | forget (train) | retain (train) | "
        + ("retain pooled (train) | " if pooled else "")
        + "**forget (held-out)** | **retain (held-out)** | "
        + ("retain pooled (held-out) | " if pooled else "")
        + " | ".join(f"retain `{s}` (held-out)" for s in r["retain_questions"][1:])
        + (" | " if len(r["retain_questions"]) > 1 else "")
        + "loss added | "
        + ("loss added (choice) | " if choice else "")
        + "ppl forget held-out |",
        "| --- " * (7 + 2 * pooled + len(r["retain_questions"]) - 1 + choice) + "|",
    ]
    for row in r["rows"]:
        mark = (" **(chosen)**" if row.get("chosen") else "") + (
            " (shipped default)" if row.get("shipped_default") else ""
        )
        extra = [_f(row[f"retain{i}@heldout"]) for i in range(1, len(r["retain_questions"]))]
        lines.append(
            f"| {row['config']}{mark} | {_f(row['forget@train'])} | {_f(row['retain0@train'])} | "
            + (f"{_f(row.get('retain_pool@train'))} | " if pooled else "")
            + f"{_f(row['forget@heldout'])} | {_f(row['retain0@heldout'])} | "
            + (f"{_f(row.get('retain_pool@heldout'))} | " if pooled else "")
            + " | ".join(extra)
            + (" | " if extra else "")
            + f"{row['loss_added']:+.4f} | "
            + (f"{row['loss_added_choice']:+.4f} | " if choice else "")
            + f"{_f(row['ppl_forget_heldout'])} |"
        )
    return "\n".join(lines)
