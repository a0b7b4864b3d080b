"""RMU against the static and gated SAE clamps on a target's known questions (one table), and the
small hyperparameter search that picks RMU's settings for a model on the target's *dev* half.

Why the split: the clamp's N and c were chosen on the train halves of the quizzes; RMU's layer,
steering coefficient and alpha are chosen the same way (``search``: train-half known questions),
and the comparison (``compare``) reports the held-out halves, which neither choice saw.
"""

from __future__ import annotations

import time
from dataclasses import replace

from unlearn_core.core import cache as C
from unlearn_core.evaluation.experiments.gate import METHODS, known_sets, unlearning_score
from unlearn_core.evaluation.targets import Target
from unlearn_core.training import rmu

LOSS_CTX = 256


def variant_row(engine, target: Target, variant: str, sets: dict, loss_tokens: int, label: str) -> dict:
    """Accuracy of ``variant`` (no clamp) on the known ``sets`` (chosen on the base model), and its
    loss added against the base model's clean loss on the target's loss corpus."""
    from unlearn_core.data import loaders as D
    from unlearn_core.evaluation.metrics import clean_nll_cached, corpus_windows, mean_nll
    from unlearn_core.evaluation.sweep import evaluate_configs

    scoring = target.scoring or engine.scoring
    windows = clean = None
    if loss_tokens:
        docs = D.load_corpus(target.loss_corpus, engine.settings.data_dir)
        windows = corpus_windows(engine.model, docs, loss_tokens, LOSS_CTX)
        clean = clean_nll_cached(engine, target.loss_corpus, windows)  # the base model's
    with rmu.applied(engine, variant):
        acc = {
            name: evaluate_configs(engine, qs, [[]], scoring=scoring, orderings=target.orderings)[0].accuracy
            if qs
            else None
            for name, qs in sets.items()
        }
        nll = mean_nll(engine, windows)[0] if windows else None
    retain = {k: v for k, v in acc.items() if k != "forget"}
    vals = [v for v in retain.values() if v is not None]
    return {
        "method": variant.split(":")[0],  # "rmu" or "persist"
        "n": None,
        "c": None,
        "label": label,
        "variant": variant,
        "forget": acc["forget"],
        "retain": retain,
        "retain_mean": sum(vals) / len(vals) if vals else None,
        "loss_added": nll - clean if nll is not None else None,
        "tau": None,
        "gate_open_forget": None,
        "gate_open_retain": None,
    }


def card_summary(card: dict) -> dict:
    keep = (
        "name",
        "target",
        "forget_corpus",
        "retain_corpora",
        "config",
        "steps_done",
        "seconds",
        "cpu",
        "delta_sha256",
        "delta_norms",
    )
    out = {k: card.get(k) for k in keep}
    hist = card.get("history") or []
    if hist:
        out["first_step"], out["last_step"] = hist[0], hist[-1]
    return out


def compare(
    engine,
    target: Target,
    name: str,
    cfg: rmu.RMUConfig,
    cs: list[float],
    ns: list[int] | None = None,
    percentile: float = 95.0,
    loss_tokens: int = 10_000,
    methods=METHODS,
    train_progress=None,
    progress=None,
    ppl_tokens: int = 0,
    stage=None,
) -> dict:
    """Train (or reuse, or resume) RMU run ``name`` on the target, then one table: the static and
    gated clamps at each (N, c) (``gate_experiment.compare``) and the RMU model, on the same held-out
    known questions and loss windows, with the SAEBench-style score per method. ``stage`` as
    ``gate_experiment.compare``'s, and one more for the RMU row and perplexity."""
    from unlearn_core.evaluation.experiments.gate import compare as clamp_compare

    t0 = time.time()
    card = rmu.train(engine, name, target, cfg, progress=train_progress)
    r = clamp_compare(engine, target, cs, ns, percentile, loss_tokens, methods, progress=progress, stage=stage)
    tick = stage("the RMU row, then perplexity per row", 2 + len(r["rows"])) if stage else (lambda n=1: None)
    sets = known_sets(engine, target)
    variant = f"{rmu.PREFIX}{name}"
    row = variant_row(engine, target, variant, sets, loss_tokens, f"rmu {name}")
    r["rows"].append(row)
    tick(1)
    r["scores"]["rmu"] = unlearning_score([row])
    r["rmu"] = card_summary(card)
    if ppl_tokens and target.ppl_corpus:
        add_perplexity(engine, target, r, variant, ppl_tokens, tick)
    r["seconds"] = round(time.time() - t0, 1)
    return r


def add_perplexity(engine, target: Target, r: dict, variant: str, n_tokens: int, tick=lambda n=1: None) -> None:
    """Perplexity on the target's ppl corpus (held-out forget-domain text) for the clean model and
    every row: a clamp row with its intervention, the RMU row with its delta."""
    from unlearn_core.evaluation.metrics import perplexity
    from unlearn_core.evaluation.targets import default_intervention
    from unlearn_core.features.stats import corpus_docs
    from unlearn_core.method.interventions import Intervention

    docs = corpus_docs(engine, target.ppl_corpus)
    base = default_intervention(engine, target)
    ppl = lambda ivs: perplexity(engine, docs, ivs, n_tokens=n_tokens)["perplexity"]  # noqa: E731
    r["ppl"] = {"corpus": target.ppl_corpus, "tokens": n_tokens, "clean": ppl(None)}
    tick(1)
    for row in r["rows"]:
        if row.get("variant"):
            with rmu.applied(engine, variant):
                row["ppl"] = ppl(None)
        else:
            row["ppl"] = ppl(
                [Intervention(base.sae_key, base.features[: row["n"]], float(row["c"]), row["method"], row["tau"])]
            )
        tick(1)


def search(
    engine,
    target: Target,
    grid: list[dict],
    base: rmu.RMUConfig,
    loss_tokens: int = 5_000,
    min_retain: float = 0.95,
    progress=None,
) -> dict:
    """Train one run per ``grid`` entry (overrides of ``base``), score each on the target's *train*
    half known questions (dev), and pick the lowest dev forget accuracy whose dev retain mean stays
    >= ``min_retain`` (ties: the smaller loss added)."""
    dev = replace(target, eval_part="train")
    cards = []
    for i, over in enumerate(grid):  # every run first, then the evaluations (docs/concepts/rmu.md on step times)
        cfg = replace(base, **over)
        if "layer" in over and "update_layers" not in over:
            cfg = replace(cfg, update_layers=())  # the default for this layer: layer-2 .. layer
        name = (
            f"search-{target.name}-"
            + "-".join(f"{k[:5]}{v:g}" for k, v in sorted(over.items()))
            + "-"
            + C.key_of(cfg.to_dict())[:8]
        )  # readable, and unique per full configuration
        cards.append(rmu.train(engine, name, target, cfg))
        if progress:
            progress(i + 1, 2 * len(grid))
    return score_runs(engine, dev, cards, rmu.PREFIX, loss_tokens, min_retain, progress)


def score_runs(engine, dev: Target, cards: list[dict], prefix: str, loss_tokens: int, min_retain: float, progress):
    """A search's second half, for every training method: each finished run (its card) scored on
    ``dev``'s known questions as the variant ``prefix + name``, and the pick (``pick``)."""
    sets = known_sets(engine, dev)
    rows = []
    for i, card in enumerate(cards):
        t0 = time.time()
        row = variant_row(engine, dev, f"{prefix}{card['name']}", sets, loss_tokens, card["name"])
        rows.append({**row, "config": card["config"], "train_s": card["seconds"], "eval_s": round(time.time() - t0, 1)})
        if progress:
            progress(len(cards) + i + 1, 2 * len(cards))
    best, rule = pick(rows, min_retain)
    return {
        "target": dev.name,
        "dev": "train half",
        "n_known": {k: len(v) for k, v in sets.items()},
        "min_retain": min_retain,
        "rows": rows,
        "best": best["config"] if best else None,
        "best_label": best["label"] if best else None,
        "rule": rule,
    }


def pick(rows: list[dict], min_retain: float) -> tuple[dict | None, str]:
    """The lowest dev forget accuracy among runs keeping dev retain >= ``min_retain``; when none
    does, the highest dev retain, then the lowest forget (a rule fixed before any held-out score)."""
    scored = [r for r in rows if r["retain_mean"] is not None and r["forget"] is not None]
    ok = [r for r in scored if r["retain_mean"] >= min_retain]
    if ok:
        return min(
            ok, key=lambda r: (r["forget"], r["loss_added"] or 0.0)
        ), f"lowest forget with retain >= {min_retain}"
    if not scored:
        return None, "nothing scored"
    return (
        min(scored, key=lambda r: (-r["retain_mean"], r["forget"], r["loss_added"] or 0.0)),
        f"none kept retain >= {min_retain}: the highest retain, then the lowest forget",
    )


def search_markdown(s: dict) -> str:
    f = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [
        f"target `{s['target']}`, dev = its {s['dev']} known questions ("
        + ", ".join(f"{k} {v}" for k, v in s["n_known"].items())
        + f"); pick: lowest dev forget accuracy with "
        f"dev retain mean >= {s['min_retain']}",
        "",
        "| layer | updated | c | alpha | lr | steps | dev forget | dev retain mean | loss added | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in s["rows"]:
        c = r["config"]
        lines.append(
            f"| {c['layer']} | {','.join(map(str, c['update_layers']))} | {c['steering_coeff']:g} | "
            f"{c['alpha']:g} | {c['lr']:g} | {c['steps']} | {f(r['forget'])} | {f(r['retain_mean'])} | "
            f"{f(r['loss_added'])} | {r['train_s']:.0f} |"
        )
    lines += ["", f"chosen ({s.get('rule', '')}): {s['best_label'] or '—'}"]
    return "\n".join(lines)
