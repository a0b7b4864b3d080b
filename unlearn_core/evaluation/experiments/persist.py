"""The persistent method's settings chosen on a target's *train* half (dev), as RMU's and the
clamps' were (``search``); the held-out comparison with the clamps, RMU and the attack bench is
``attacks.comparison`` (it needs the bench, a layer above this one)."""

from __future__ import annotations

from dataclasses import replace

from unlearn_core.core import cache as C
from unlearn_core.evaluation.experiments.rmu import score_runs
from unlearn_core.evaluation.targets import Target
from unlearn_core.training import persist as P


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def search(
    engine,
    target: Target,
    grid: list[dict],
    base: P.PersistConfig,
    loss_tokens: int = 5_000,
    min_retain: float = 0.95,
    progress=None,
) -> dict:
    """One run per ``grid`` entry (overrides of ``base``), scored on the target's *train* half known
    questions; the pick is RMU's rule (``rmu.pick``): the lowest dev forget keeping dev retain."""
    dev = replace(target, eval_part="train")
    cards = []
    for i, over in enumerate(grid):
        cfg = replace(base, **over)
        name = f"search-{target.name}-" + C.key_of(cfg.to_dict())[:10]
        cards.append(P.train(engine, name, target, cfg))
        if progress:
            progress(i + 1, 2 * len(grid))
    return score_runs(engine, dev, cards, P.PREFIX, loss_tokens, min_retain, progress)


def search_markdown(s: dict) -> str:
    lines = [
        f"target `{s['target']}`, dev = its {s['dev']} known questions ("
        + ", ".join(f"{k} {v}" for k, v in s["n_known"].items())
        + f"); pick: lowest dev forget accuracy with dev retain mean >= {s['min_retain']}",
        "",
        "| forget term | margin | retain scale | retain w | lm w | lr | steps | dev forget | dev retain mean | "
        "loss added | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in s["rows"]:
        c = r["config"]
        lines.append(
            f"| {c['forget_mode']} | {c['margin']:g} | {c['retain_norm']} | {c['retain_weight']:g} | "
            f"{c['lm_weight']:g} | {c['lr']:g} | {c['steps']} | "
            f"{_f(r['forget'])} | {_f(r['retain_mean'])} | {_f(r['loss_added'])} | {r['train_s']:.0f} |"
        )
    lines += ["", f"chosen ({s.get('rule', '')}): {s['best_label'] or '—'}"]
    return "\n".join(lines)
