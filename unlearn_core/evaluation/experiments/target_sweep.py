"""The targets experiment: a sweep over selection, N and c per target, chosen on one half, reported on the other.

Why two halves: a default intervention chosen on the questions it is then scored on would
overstate it. Every question set of a target is split 50/50 by id (``@train`` / ``@heldout``).
Features are selected on the train half's text (the target's forget corpus is ``...@train``), the
default is chosen on the train half's known questions (lowest forget accuracy among the
configurations that keep retain accuracy >= ``min_retain``), and every row reports the held-out
half, which neither step saw. The quizzes' own held-out third is not distributed at all.

The rule (``choose``, since 2026-12-07): among the configurations adding at most ``max_loss`` =
0.05 nats on WebText's train split and keeping the pooled retain accuracy (the known train-half
questions of every set in the target's ``choice_retain``) at least ``min_retain`` = 0.95, the
lowest forget accuracy. Ties: less loss added, then higher retain, then smaller N and c. The
result names the rule's margin and the number of retain questions it rests on.

Ties on forget accuracy go to the row that adds less loss on WebText's train split
(``CHOICE_LOSS_CORPUS``), then to higher retain accuracy: retain is already a floor, and the
loss added is the side effect the rule otherwise never reads. (Until 2026-12-04 the tie went to
retain first; docs/decisions.md, the tie-break.)

The loss budget (``max_loss``) is read on WebText's train split (``CHOICE_LOSS_CORPUS``) so that
the reported held-out loss stays unread by the choice; ``max_loss=None`` drops it (the rule
before 2026-12-07, with retain >= 0.9 on the first retain set alone).

Selection variants: ``paper`` ranks forget-corpus frequency against WikiText-2 only (the paper's
retain corpus); ``format-matched`` against the target's retain corpora (retain quiz text in the
same format, WikiText-2, WebText), so features of the quiz format itself drop out; ``search``
(targets with a ``selection.query``) takes the features most specific to the query text;
``attribution`` and ``fisher`` rank features by the train half's known questions
(``features.attribution``).
"""

from __future__ import annotations

import time
from dataclasses import replace

from unlearn_core.data import loaders as D
from unlearn_core.evaluation.mcq import known_questions
from unlearn_core.evaluation.metrics import loss_added, perplexity
from unlearn_core.evaluation.sweep import evaluate_configs
from unlearn_core.evaluation.target_scores import NoQuestionsError
from unlearn_core.evaluation.targets import Target, forget_corpus_for, retain_frequency, with_part
from unlearn_core.features import stats as F
from unlearn_core.features import text_search as TXS
from unlearn_core.method.interventions import Intervention
from unlearn_core.method.modes import GATED_MODES

PAPER_RETAIN = ("wikitext@train",)
QUESTION_VARIANTS = ("attribution", "fisher")  # selections ranked on the train half's known questions
MIN_RETAIN = 0.95  # the rule's floor on the pooled retain accuracy (train half)
MAX_LOSS = 0.05  # the rule's budget: nats of loss added on CHOICE_LOSS_CORPUS
CHOICE_LOSS_CORPUS = "webtext-train"  # the loss the choice reads; rows report the target's (held-out) loss corpus


def _bar(total: int, desc: str):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _known_sets(engine, target: Target, scoring: str) -> dict[str, list]:
    """Known questions of the forget set and every retain set, on both halves."""
    specs = {"forget": target.forget_questions}
    for i, s in enumerate(target.retain_questions):
        specs[f"retain{i}"] = s
    out = {}
    for name, spec in specs.items():
        for part in ("train", "heldout"):
            qs = D.load_question_set(with_part(spec, part), engine.settings.data_dir).questions
            bar = _bar(len(qs), f"known {with_part(spec, part)}")
            out[f"{name}@{part}"] = known_questions(
                engine, qs, scoring=scoring, strict=target.strict_known, progress=bar.update
            )
            bar.close()
    return out


def _retain_variants(target: Target, variants: tuple[str, ...]) -> tuple[dict, dict]:
    """The frequency variants' retain corpora, a variant whose corpora repeat another's skipped
    (a target whose own retain list is the paper's would sweep every row twice)."""
    candidates = {"paper": PAPER_RETAIN, "format-matched": tuple(target.retain_corpora)}
    retain_sets, skipped = {}, {}
    for v in variants:
        same = next((u for u, rs in retain_sets.items() if rs == candidates[v]), None)
        if same:
            skipped[v] = f"same retain corpora as `{same}` ({', '.join(candidates[v])})"
        else:
            retain_sets[v] = candidates[v]
    return retain_sets, skipped


def _tau(engine, sae: str, feats: tuple, target: Target) -> float | None:
    """A gated target's tau for these features, calibrated as the default's (``gate_percentile``
    of rho on the retain corpora, the highest); None for a static mode. Once per feature set: it
    does not depend on c."""
    iv = target.intervention
    if iv.mode not in GATED_MODES:
        return None
    from unlearn_core.method.gate import tau_over

    return tau_over(engine, sae, feats, list(target.retain_corpora), iv.gate_percentile)["tau"]


def _frequency_grid(
    engine,
    sae: str,
    target: Target,
    fs,
    stats: dict,
    retain_sets: dict,
    thresholds,
    ns,
    values,
    grid: list,
    configs: list,
) -> None:
    """Append the frequency selections' rows (variant x threshold x N x c) to ``grid`` and ``configs``."""
    for v, corpora in retain_sets.items():
        rf = retain_frequency([stats[c] for c in corpora])
        for t in thresholds:
            rows = F.select_features(fs.freq, rf, t, max(ns))
            for n in ns:
                feats = tuple(r["feature"] for r in rows[:n])
                tau = _tau(engine, sae, feats, target) if feats else None
                for c in values:
                    if feats:
                        grid.append(
                            {
                                "selection": v,
                                "retain_corpora": list(corpora),
                                "threshold": t,
                                "n": n,
                                "n_features": len(feats),
                                "c": float(c),
                                "features": list(feats),
                            }
                        )
                        configs.append([Intervention(sae, feats, float(c), target.intervention.mode, tau)])


def _ranked_grid(
    engine, sae: str, target: Target, ranked: list[int], ns, values, grid: list, configs: list, **row
) -> None:
    """Append the rows of one ranked feature list (N x c; ``row`` names the selection): the top N,
    with one row per distinct list where fewer than N were ranked."""
    seen: set = set()
    for n in ns:
        feats = tuple(ranked[:n])
        if not feats or feats in seen:
            continue
        seen.add(feats)
        tau = _tau(engine, sae, feats, target)
        for c in values:
            grid.append(
                {
                    **row,
                    "retain_corpora": list(target.retain_corpora),
                    "threshold": None,
                    "n": n,
                    "n_features": len(feats),
                    "c": float(c),
                    "features": list(feats),
                }
            )
            configs.append([Intervention(sae, feats, float(c), target.intervention.mode, tau)])


def _search_grid(engine, sae: str, target: Target, toks: int, ns, values, grid: list, configs: list) -> None:
    """Append the search selection's rows: the query's features do not depend on a threshold."""
    bg = F.feature_stats(engine, sae, target.selection.background, n_tokens=toks)
    found = [r["feature"] for r in TXS.select_by_search(engine, sae, target.selection.query, bg, max(ns))]
    sel = target.selection
    _ranked_grid(
        engine,
        sae,
        target,
        found,
        ns,
        values,
        grid,
        configs,
        selection="search",
        query=sel.query,
        background=sel.background,
    )


def _question_grid(engine, sae: str, target: Target, method: str, ns, values, grid: list, configs: list) -> None:
    """Append an attribution or fisher selection's rows (N x c): the top N of one ranking."""
    from unlearn_core.evaluation.targets import select_for_target

    ranked = [r["feature"] for r in select_for_target(engine, target, sae, n=max(ns), method=method)["features"]]
    _ranked_grid(engine, sae, target, ranked, ns, values, grid, configs, selection=method)


def _accuracies(engine, target: Target, known: dict, configs: list, scoring: str) -> dict:
    """Per question set and half, each configuration's accuracy; and ``retain_pool@<half>``, the
    pooled accuracy over the target's ``choice_retain`` sets (what the rule reads)."""
    acc, counts = {}, {}
    bar = _bar(sum(len(q) for q in known.values()), f"{target.name}: {len(configs)} configurations")
    for name, qs in known.items():
        res = evaluate_configs(engine, qs, configs, scoring=scoring, orderings=target.orderings, progress=bar.update)
        acc[name] = [r.accuracy if qs else None for r in res]
        counts[name] = [(r.correct, r.total) for r in res]
    bar.close()
    pool = [f"retain{i}" for i, s in enumerate(target.retain_questions) if s in target.choice_retain_sets]
    for part in ("train", "heldout"):
        acc[f"retain_pool@{part}"] = pooled_accuracy([counts[f"{p}@{part}"] for p in pool])
    return acc


def pooled_accuracy(counts: list[list[tuple[int, int]]]) -> list[float | None]:
    """Per configuration, correct / total summed over several sets (each a list of (correct,
    total) per configuration): every question weighs the same, whichever set it is in."""
    out = []
    for per_config in zip(*counts):
        total = sum(t for _, t in per_config)
        out.append(sum(c for c, _ in per_config) / total if total else None)
    return out


def _rows(
    engine, target: Target, known: dict, acc: dict, grid: list, configs: list, loss_tokens: int, ppl_tokens: int
) -> tuple[list[dict], bool]:
    """One row per configuration (the first: none) with accuracies, loss added and perplexity; and
    whether the choice's own loss column was measured."""
    docs_loss = D.load_corpus(target.loss_corpus, engine.settings.data_dir)
    docs_choice = D.load_corpus(CHOICE_LOSS_CORPUS, engine.settings.data_dir) if loss_tokens > 0 else None
    ppl_name, _, ppl_part = (target.ppl_corpus or "").partition("@")
    docs_ppl = D.load_corpus(ppl_name, engine.settings.data_dir, part=ppl_part or "all") if ppl_name else None

    def added(docs: list[str], corpus: str, cfg: list) -> float:
        return (
            loss_added(engine, docs, cfg, n_tokens=loss_tokens, corpus=corpus).loss_added
            if cfg and loss_tokens
            else 0.0
        )

    rows = []
    bar = _bar(len(configs), f"{target.name}: loss added and perplexity")
    for i, cfg in enumerate(configs):
        row = {"config": "none"} if not cfg else {"config": config_label(grid[i - 1]), **grid[i - 1]}
        for name in acc:
            row[name] = acc[name][i]
        row["loss_added"] = added(docs_loss, target.loss_corpus, cfg)
        if docs_choice is not None:
            row["loss_added_choice"] = added(docs_choice, CHOICE_LOSS_CORPUS, cfg)
        row["ppl_forget_heldout"] = (
            perplexity(engine, docs_ppl, cfg or None, n_tokens=ppl_tokens)["perplexity"] if docs_ppl else None
        )
        rows.append(row)
        bar.update(1)
    bar.close()
    return rows, docs_choice is not None


def run(
    engine,
    target: Target,
    variants: tuple[str, ...] | None = None,
    thresholds=(0.01,),
    ns=(20, 50, 100),
    values=(100.0, 200.0, 400.0),
    min_retain: float = MIN_RETAIN,
    loss_tokens: int = 1500,
    ppl_tokens: int = 1500,
    sae: str | None = None,
    max_loss: float | None = MAX_LOSS,
) -> dict:
    if max_loss is not None and loss_tokens <= 0:  # an unmeasured budget would pass every row
        raise ValueError("a loss budget (max_loss) needs loss_tokens > 0; pass max_loss=None to choose without one")
    t0 = time.time()
    sae = sae or engine.default_sae
    if variants is None:
        variants = ("paper", "format-matched", *QUESTION_VARIANTS) + (("search",) if target.selection.query else ())
    unknown = set(variants) - {"paper", "format-matched", "search", *QUESTION_VARIANTS}
    if unknown:
        raise ValueError(f"unknown selection variant(s) {sorted(unknown)}")
    if "search" in variants and not target.selection.query:
        raise ValueError(f"target {target.name!r} has no selection query: the search variant needs one")
    scoring = target.scoring or engine.scoring
    forget_corpus, note = forget_corpus_for(target, engine.settings.data_dir)
    toks = target.selection.tokens
    fs = F.feature_stats(engine, sae, forget_corpus, n_tokens=toks)
    frequency = tuple(v for v in variants if v in ("paper", "format-matched"))
    retain_sets, skipped = _retain_variants(target, frequency)
    stats = {c: F.feature_stats(engine, sae, c, n_tokens=toks) for rs in retain_sets.values() for c in rs}
    known = _known_sets(engine, target, scoring)
    grid, configs = [], [[]]
    _frequency_grid(engine, sae, target, fs, stats, retain_sets, thresholds, ns, values, grid, configs)
    if "search" in variants:
        _search_grid(engine, sae, target, toks, ns, values, grid, configs)
    for method in (v for v in variants if v in QUESTION_VARIANTS):
        try:
            _question_grid(engine, sae, target, method, ns, values, grid, configs)
        except NoQuestionsError as e:  # nothing to rank features on: say so, sweep the rest
            skipped[method] = str(e)
    acc = _accuracies(engine, target, known, configs, scoring)
    rows, choice = _rows(engine, target, known, acc, grid, configs, loss_tokens, ppl_tokens)
    chosen = choose(rows[1:], min_retain, max_loss)
    for r in rows[1:]:
        r["chosen"] = r is chosen
    n_pool = sum(
        len(known[f"retain{i}@train"]) for i, s in enumerate(target.retain_questions) if s in target.choice_retain_sets
    )
    mark_shipped(rows, target)
    return {
        "target": target.name,
        "sae": sae,
        "hook": engine.saes[sae].hook_name,
        "scoring": scoring,
        "strict_known": target.strict_known,
        "forget_corpus": forget_corpus,
        "forget_corpus_note": note,
        "retain_questions": list(target.retain_questions),
        "forget_questions": target.forget_questions,
        "n_known": {k: len(v) for k, v in known.items()},
        "choice_retain": list(target.choice_retain_sets),
        "n_retain_pool_train": n_pool,
        "margin": margin(chosen, min_retain, max_loss),
        "min_retain": min_retain,
        "skipped_variants": skipped,
        "max_loss": max_loss,
        "choice_loss_corpus": CHOICE_LOSS_CORPUS if choice else None,
        "loss_tokens": loss_tokens,
        "loss_corpus": target.loss_corpus,
        "ppl_tokens": ppl_tokens,
        "ppl_corpus": target.ppl_corpus,
        "rows": rows,
        "chosen": chosen["config"] if chosen else None,
        "seconds": round(time.time() - t0),
    }


def choose(rows: list[dict], min_retain: float = MIN_RETAIN, max_loss: float | None = MAX_LOSS) -> dict | None:
    """The train-half choice: lowest forget accuracy among rows keeping the pooled retain accuracy
    (``retain_pool@train``) >= ``min_retain`` and, with a budget, adding <= ``max_loss`` nats on
    the choice corpus (ties: less loss added on the choice corpus where measured, then higher
    retain, then smaller N and c). None when no row qualifies."""
    ok = [
        r
        for r in rows
        if r["retain_pool@train"] is not None
        and r["forget@train"] is not None
        and r["retain_pool@train"] >= min_retain
        and (max_loss is None or r["loss_added_choice"] <= max_loss)
    ]
    return (
        min(
            ok,
            key=lambda r: (r["forget@train"], r.get("loss_added_choice", 0.0), -r["retain_pool@train"], r["n"], r["c"]),
        )
        if ok
        else None
    )


def merge(results: list[dict]) -> dict:
    """Saved sweeps of one target (the same known sets and rule) as one: the rows of all, a row
    repeated by a later sweep kept once, and the rule applied again to the union."""
    first = results[0]
    keys = ("target", "n_known", "min_retain", "max_loss", "choice_retain", "loss_tokens", "ppl_tokens")
    for r in results[1:]:
        differ = [k for k in keys if r.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"sweeps differ in {differ}: the rule would not read the same questions")
    seen, rows = set(), [first["rows"][0]]
    for r in results:
        for row in r["rows"][1:]:
            if row["config"] not in seen:
                seen.add(row["config"])
                rows.append(dict(row))
    chosen = choose(rows[1:], first["min_retain"], first["max_loss"])
    for row in rows[1:]:
        row["chosen"] = row is chosen
    skipped = {k: v for r in results for k, v in r.get("skipped_variants", {}).items()}
    return {
        **first,
        "rows": rows,
        "chosen": chosen["config"] if chosen else None,
        "margin": margin(chosen, first["min_retain"], first["max_loss"]),
        "skipped_variants": skipped,
        "seconds": sum(r.get("seconds", 0) for r in results),
        "merged_from": len(results),
    }


def unlearning_score(rows: list[dict], part: str, min_retain: float = 0.99) -> tuple[float, str] | None:
    """SAEBench's unlearning score on one half: the best ``1 - forget`` among rows keeping the
    pooled retain accuracy >= ``min_retain`` of clean (clean is 1.0 on known questions); no loss
    budget, as theirs. Read on the half it is chosen on, it is optimistic by construction."""
    ok = [
        r
        for r in rows
        if r.get(f"retain_pool@{part}") is not None
        and r.get(f"forget@{part}") is not None
        and r[f"retain_pool@{part}"] >= min_retain
    ]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r[f"forget@{part}"], r["n"], r["c"]))
    return 1.0 - best[f"forget@{part}"], best["config"]


def margin(chosen: dict | None, min_retain: float, max_loss: float | None) -> dict | None:
    """How far the chosen row is inside the rule: retain above its floor, loss below its budget."""
    if chosen is None:
        return None
    return {
        "retain": chosen["retain_pool@train"] - min_retain,
        "loss": None if max_loss is None else max_loss - chosen["loss_added_choice"],
    }


def config_label(g: dict) -> str:
    if g["selection"] == "search":
        return 'search "{query}" N={n} c={c:g}'.format(**g)
    if g["selection"] in QUESTION_VARIANTS:
        return "{selection} N={n} c={c:g}".format(**g)
    return "{selection} t={threshold:g} N={n} c={c:g}".format(**g)


def _config_key(selection: str, c: float, n: int, threshold, retain_corpora, query) -> tuple:
    """What makes a sweep row the same configuration as a target's default: a search is its query,
    a frequency selection its threshold and retain corpora."""
    if selection == "search":
        return (c, n, "search", query)
    if selection in QUESTION_VARIANTS:
        return (c, n, selection)
    return (c, n, threshold, tuple(retain_corpora))


def mark_shipped(rows: list[dict], target: Target) -> None:
    """Flag the row that is the registry's current default (re-run after the registry changes)."""
    sel = target.selection
    shipped = _config_key(sel.method, target.intervention.c, sel.n, sel.threshold, target.retain_corpora, sel.query)
    for r in rows[1:]:
        r["shipped_default"] = (
            _config_key(r.get("selection"), r["c"], r["n"], r["threshold"], r["retain_corpora"], r.get("query"))
            == shipped
        )


def with_default(target: Target, row: dict) -> Target:
    """The target with a sweep row as its default intervention (for re-evaluation)."""
    if row["selection"] == "search" or row["selection"] in QUESTION_VARIANTS:
        return replace(
            target,
            selection=replace(target.selection, method=row["selection"], n=row["n"]),
            intervention=replace(target.intervention, c=row["c"]),
        )
    return replace(
        target,
        retain_corpora=tuple(row["retain_corpora"]),
        selection=replace(target.selection, method="frequency", threshold=row["threshold"], n=row["n"]),
        intervention=replace(target.intervention, c=row["c"]),
    )
