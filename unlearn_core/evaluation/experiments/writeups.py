"""The two write-ups' experiments, reproduced on whatever engine is loaded.

* ``wmdp``: select features from WMDP-bio question text (train part) vs WikiText-2 (train
  part), clamp them at several c, and measure perplexity on held-out bio text and WikiText-2,
  loss added on WebText, and accuracy on known WMDP-bio (held-out part) and MMLU side-effect
  questions.
* ``book``: the Harry Potter study with a public-domain stand-in (Sherlock Holmes): select
  book features vs WikiText-2 and report perplexities under none / SAE spliced in (nothing
  clamped) / reconstruction-only (features zeroed, error dropped) / zero ablation / clamp.

Each returns a dict (saved as JSON) and a markdown report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from unlearn_core.data import loaders as D
from unlearn_core.evaluation.mcq import known_questions
from unlearn_core.evaluation.metrics import generate, loss_added, perplexity
from unlearn_core.evaluation.sweep import evaluate_configs
from unlearn_core.features import stats as F
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.engine import Engine


def _bar(total: int, desc: str):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _select(engine: Engine, sae: str, forget: str, retain: str, threshold: float, n: int, tokens: int):
    bar = _bar(2 * tokens, f"feature stats {forget} / {retain}")
    fs = F.feature_stats(engine, sae, forget, n_tokens=tokens, progress=bar.update)
    rs = F.feature_stats(engine, sae, retain, n_tokens=tokens, progress=bar.update)
    bar.close()
    return fs, rs, F.select_features(fs.freq, rs.freq, threshold, n)


def _feature_table(engine: Engine, sae: str, rows: list[dict], fs, k: int) -> list[dict]:
    out = []
    for r in rows[:k]:
        ex = F.top_examples(engine, fs, r["feature"], k=2, n_quantiles=0, context=12)
        snippet = ""
        if ex["top"]:
            e = ex["top"][0]
            snippet = "".join(f"[{t}]" if i == e["peak"] else t for i, t in enumerate(e["tokens"]))
        out.append(
            {
                **r,
                "description": F.auto_description(engine, sae, r["feature"], fs),
                "top_example": snippet.replace("\n", " "),
            }
        )
    return out


def _ppl(engine, corpus: str, ivs, tokens: int) -> float:
    name, part = F.parse_corpus_spec(corpus)
    docs = D.load_corpus(name, engine.settings.data_dir, part=part)
    return perplexity(engine, docs, ivs, n_tokens=tokens)["perplexity"]


def _known_questions(engine: Engine, wmdp_limit: int, mmlu_limit: int) -> tuple[list, list, dict[str, list]]:
    """(held-out WMDP-bio questions, the known ones among them, known questions per MMLU
    side-effect subject): the sets every condition of the WMDP experiment is scored on."""
    wmdp = D.load_wmdp_bio(engine.settings.data_dir)
    held = wmdp.questions[int(len(wmdp.questions) * 0.8) :]
    held = held[:wmdp_limit] if wmdp_limit else held
    bar = _bar(len(held), "known WMDP-bio (held-out)")
    known_bio = known_questions(engine, held, progress=bar.update)
    bar.close()
    side = {}
    for subj in D.SIDE_EFFECT_SUBJECTS:
        qs = D.load_mmlu(subj, data_dir=engine.settings.data_dir).questions[:mmlu_limit]
        bar = _bar(len(qs), f"known {subj}")
        side[subj] = known_questions(engine, qs, progress=bar.update)
        bar.close()
    return held, known_bio, side


def _condition_row(
    engine: Engine, cond: tuple, ivs, bio_acc: float, side_acc: dict[str, float], ppl_tokens: int, loss_tokens: int
) -> dict:
    """One condition's row of the WMDP table: its accuracies (already scored), then its perplexities
    and loss added, measured here."""
    name, n, c = cond
    row = {
        "condition": name,
        "n_features": n or 0,
        "c": c,
        "wmdp_bio_known_acc": bio_acc,
        "mmlu_side_acc": side_acc,
        "ppl_bio_heldout": _ppl(engine, "wmdp-bio-text@heldout", ivs, ppl_tokens),
        "ppl_wikitext_heldout": _ppl(engine, "wikitext@heldout", ivs, ppl_tokens),
    }
    vals = list(row["mmlu_side_acc"].values())
    row["mmlu_side_mean"] = sum(vals) / len(vals) if vals else float("nan")
    if ivs:
        la = loss_added(
            engine, D.load_corpus("webtext", engine.settings.data_dir), ivs, n_tokens=loss_tokens, corpus="webtext"
        )
        row["loss_added_webtext"] = la.loss_added
    else:
        row["loss_added_webtext"] = 0.0
    return row


def wmdp_experiment(
    engine: Engine,
    sae: str | None = None,
    threshold: float = 0.01,
    ns=(10, 20, 50),
    values=(0.0, 5.0, 20.0, 50.0, 100.0),
    main_n: int = 20,
    stats_tokens: int = 100_000,
    ppl_tokens: int = 4000,
    loss_tokens: int = 4000,
    mmlu_limit: int = 100,
    wmdp_limit: int = 0,
) -> dict:
    sae = sae or engine.default_sae
    t0 = time.time()
    fs, rs, rows = _select(engine, sae, "wmdp-bio-text@train", "wikitext@train", threshold, max(ns), stats_tokens)
    result: dict = {
        "sae": sae,
        "hook": engine.saes[sae].hook_name,
        "scoring": engine.scoring,
        "threshold": threshold,
        "selection": _feature_table(engine, sae, rows, fs, 20),
        "n_selected_available": len(rows),
    }
    # conditions: every c for the main N, and c=50 for the other Ns
    conds = [("none", None, None)] + [(f"N={main_n}, c={c:g}", main_n, c) for c in values]
    conds += [(f"N={n}, c=50", n, 50.0) for n in ns if n != main_n]
    ivs_of = {
        name: ([Intervention(sae, tuple(r["feature"] for r in rows[:n]), c, "clamp")] if n else None)
        for name, n, c in conds
    }
    held, known_bio, side = _known_questions(engine, wmdp_limit, mmlu_limit)
    configs = [ivs_of[name] or [] for name, _, _ in conds]
    bar = _bar(len(known_bio) + sum(len(v) for v in side.values()), "accuracy, all conditions")
    acc_bio = evaluate_configs(engine, known_bio, configs, progress=bar.update)
    acc_side = {s: evaluate_configs(engine, qs, configs, progress=bar.update) for s, qs in side.items()}
    bar.close()
    table = [
        _condition_row(
            engine,
            (name, n, c),
            ivs_of[name],
            acc_bio[i].accuracy,
            {s: acc_side[s][i].accuracy for s in side},
            ppl_tokens,
            loss_tokens,
        )
        for i, (name, n, c) in enumerate(conds)
    ]
    result.update(
        {
            "conditions": table,
            "n_known": {"wmdp-bio (held-out 20%)": len(known_bio), **{s: len(v) for s, v in side.items()}},
            "n_candidates": {
                "wmdp-bio (held-out 20%)": len(held),
                **{s: min(mmlu_limit, len(D.load_mmlu(s, data_dir=engine.settings.data_dir).questions)) for s in side},
            },
            "ppl_tokens": ppl_tokens,
            "loss_tokens": loss_tokens,
            "stats_tokens": stats_tokens,
            "seconds": round(time.time() - t0),
        }
    )
    return result


def book_experiment(
    engine: Engine,
    sae: str | None = None,
    threshold: float = 0.01,
    n: int = 50,
    c: float = 50.0,
    stats_tokens: int = 100_000,
    ppl_tokens: int = 4000,
    prompt: str = "Sherlock Holmes took his bottle from the corner of the",
    features: tuple[int, ...] | None = None,
) -> dict:
    """With ``features`` given (e.g. a target's default), they are used instead of the paper's selection."""
    sae = sae or engine.default_sae
    t0 = time.time()
    fs, rs, rows = _select(engine, sae, "sherlock@train", "wikitext@train", threshold, n, stats_tokens)
    if features is not None:
        rows = [
            {"feature": int(i), "forget_freq": float(fs.freq[i]), "retain_freq": float(rs.freq[i])} for i in features
        ]
    feats = tuple(r["feature"] for r in rows)
    conds = [
        ("none", None),
        ("SAE spliced in, nothing clamped (error dropped)", [Intervention(sae, (), 0.0, "reconstruct")]),
        (
            f"reconstruction-only: {len(feats)} features zeroed, error dropped (the study's hook)",
            [Intervention(sae, feats, 0.0, "reconstruct")],
        ),
        (f"zero ablation of {len(feats)} features (error kept)", [Intervention(sae, feats, 0.0, "zero")]),
        (f"clamp {len(feats)} features to -{c:g} (error kept)", [Intervention(sae, feats, c, "clamp")]),
    ]
    table = []
    for name, ivs in conds:
        table.append(
            {
                "condition": name,
                "ppl_wikitext_heldout": _ppl(engine, "wikitext@heldout", ivs, ppl_tokens),
                "ppl_sherlock_heldout": _ppl(engine, "sherlock@heldout", ivs, ppl_tokens),
            }
        )
    gens = {
        "prompt": prompt,
        "none": generate(engine, prompt, None, max_new_tokens=30),
        "clamp": generate(engine, prompt, conds[-1][1], max_new_tokens=30),
    }
    return {
        "sae": sae,
        "hook": engine.saes[sae].hook_name,
        "threshold": threshold,
        "n_selected": len(feats),
        "features_given": features is not None,
        "c": c,
        "selection": _feature_table(engine, sae, rows, fs, 10),
        "conditions": table,
        "generation": gens,
        "ppl_tokens": ppl_tokens,
        "seconds": round(time.time() - t0),
    }


def _fmt(x) -> str:
    return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def wmdp_markdown(r: dict) -> str:
    lines = [
        f"SAE `{r['sae']}` at `{r['hook']}`, scoring `{r['scoring']}`, retain threshold {r['threshold']}.",
        "Known questions (answered correctly by the clean model): "
        + ", ".join(f"{k} {v}/{r['n_candidates'][k]}" for k, v in r["n_known"].items()),
        "",
        "| feature | forget freq | retain freq | automatic description | top WMDP example |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {s['feature']} | {s['forget_freq']:.4f} | {s['retain_freq']:.4f} | {s['description']} | "
        f"{s['top_example'][:90].replace('|', '/')} |"
        for s in r["selection"]
    ]
    subj = list(r["conditions"][0]["mmlu_side_acc"])
    lines += [
        "",
        "| condition | WMDP-bio acc (known) | " + " | ".join(subj) + " | MMLU mean | loss added (WebText) |"
        " ppl bio held-out | ppl WikiText-2 held-out |",
        "| --- " * (6 + len(subj)) + "|",
    ]
    for c in r["conditions"]:
        lines.append(
            f"| {c['condition']} | {_fmt(c['wmdp_bio_known_acc'])} | "
            + " | ".join(_fmt(c["mmlu_side_acc"][s]) for s in subj)
            + f" | {_fmt(c['mmlu_side_mean'])} | {c['loss_added_webtext']:+.4f} | "
            f"{c['ppl_bio_heldout']:.2f} | {c['ppl_wikitext_heldout']:.2f} |"
        )
    return "\n".join(lines)


def book_markdown(r: dict) -> str:
    how = (
        "the target's default features"
        if r.get("features_given")
        else f"selected on Sherlock Holmes train part vs WikiText-2 train part, threshold {r['threshold']}"
    )
    lines = [
        f"SAE `{r['sae']}` at `{r['hook']}`; {r['n_selected']} features ({how}); perplexity over "
        f"{r['ppl_tokens']} tokens.",
        "",
        "| condition | ppl WikiText-2 (held-out) | ppl Sherlock Holmes (held-out) |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {c['condition']} | {c['ppl_wikitext_heldout']:.2f} | {c['ppl_sherlock_heldout']:.2f} |"
        for c in r["conditions"]
    ]
    lines += ["", "| feature | book freq | WikiText freq | automatic description |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {s['feature']} | {s['forget_freq']:.4f} | {s['retain_freq']:.4f} | {s['description']} |"
        for s in r["selection"]
    ]
    g = r["generation"]
    lines += [
        "",
        f"Generation, prompt `{g['prompt']}`:",
        f"- none: `{g['none'].strip()}`",
        f"- clamp: `{g['clamp'].strip()}`",
    ]
    return "\n".join(lines)


def save(result: dict, markdown: str, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.with_suffix(".json").write_text(json.dumps(result, indent=2))
    p.with_suffix(".md").write_text(markdown + "\n")
