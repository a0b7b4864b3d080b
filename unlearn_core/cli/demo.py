"""``demo``: a target's default intervention flips a question the model knows."""

from __future__ import annotations

import sys

from unlearn_core.cli.common import add_command, emit, engine_of, fmt_probs, progress_bar
from unlearn_core.data import loaders as D
from unlearn_core.evaluation.verdicts import verdict_of
from unlearn_core.features.default_target import DEFAULT_TARGET


def stats_total(engine, target) -> int:
    """The tokens the demo's feature statistics will go through (their progress counts each
    window's tokens after BOS): those of the selection's corpora not cached yet. A corpus may hold
    fewer tokens than the budget (a quiz half is ~2k), so the windows are counted, not the budget."""
    from unlearn_core.evaluation.targets import forget_corpus_for
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.features import stats as F

    sel = target.selection
    forget, _ = forget_corpus_for(target, engine.settings.data_dir)
    corpora = [forget, *target.retain_corpora] + ([sel.background] if sel.method == "search" else [])
    total = 0
    for corpus in dict.fromkeys(corpora):
        docs, windows = F.stats_windows(engine, corpus, sel.tokens)
        path = F.stats_path(engine, engine.default_sae, corpus, docs, sel.tokens)
        if not path.exists() and not SH.shipped_path(path).is_file():  # shipped ones are read, not computed
            total += sum(len(w) - 1 for w in windows)
    return total


def cmd_demo(args) -> None:
    """The quick-start demo: a target's default intervention flips a question the model knows."""
    from unlearn_core.evaluation.demo import run_demo
    from unlearn_core.evaluation.targets import engine_target

    engine = engine_of(args)
    t = engine_target(engine, args.target)
    bar = progress_bar(
        stats_total(engine, t),
        f"feature statistics on {1 + len(t.retain_corpora)} corpora, tokens (first run only, then cached)",
    )
    out = run_demo(
        engine, args.target, progress=lambda n, msg: print(f"[demo] {msg}", file=sys.stderr), stats_progress=bar.update
    )
    bar.close()
    emit(args, out, demo_text(out))


def _question_lines(d: dict) -> list[str]:
    return [d["question"]] + [
        f"  {L}. {c}" + ("   <- correct" if i == d["answer"] else "")
        for i, (L, c) in enumerate(zip(D.LETTERS, d["choices"]))
    ]


def demo_text(out: dict) -> str:
    iv = out["intervention"]
    lines = [
        f"target {out['target']}: {out['description']}",
        f"default intervention: {iv['mode']} {len(iv['features'])} features of {iv['sae']} to -c, c = {iv['c']:g}"
        + (f", gate tau = {iv['gate']:.3f}" if iv.get("gate") is not None else "")
        + f" (selected on {out['forget_corpus']} vs {', '.join(out['retain_corpora'])})",
        "",
    ]
    f = out["forget_example"]
    if f:
        lines += ["FORGET question (the clean model knows it: correct, and not guessable without the question):"]
        lines += _question_lines(f["question"])
        lines += [
            f"  clean    : {fmt_probs(f['base']['probs'])}  -> {D.LETTERS[f['base']['predicted']]} (right)",
            f"  clamped  : {fmt_probs(f['intervened']['probs'])}  -> {D.LETTERS[f['intervened']['predicted']]} "
            f"({verdict_of(f).label()})",
        ]
    else:
        lines.append(
            "no known forget question changed its answer under the default intervention "
            f"(checked {out['n_checked_forget']})"
        )
    r = out["retain_example"]
    if r:
        v = verdict_of(r)
        lines += ["", "RETAIN question (general knowledge, should stay right and as sure):"]
        lines += _question_lines(r["question"])
        lines += [
            f"  clean    : {fmt_probs(r['base']['probs'])}  -> {D.LETTERS[r['base']['predicted']]}",
            f"  clamped  : {fmt_probs(r['intervened']['probs'])}  -> {D.LETTERS[r['intervened']['predicted']]} "
            f"({v.label()})",
            f"  {v.sentence()}",
        ]
    g = out.get("generation")
    if g:
        lines += ["", f"FREE TEXT (keyword {g['keyword']!r}): {g['prompt']!r}"]
        lines += [f"  clean    : {g['clean'].strip()!r}", f"  clamped  : {g['clamped'].strip()!r}"]
        lines += [f"  -> {g['verdict']} (clean-model NLL of the clamped text {g['clamped_nll']:.2f} nats/token)"]
    lines += ["", out["summary"]]
    return "\n".join(lines)


def add_parsers(sub) -> None:
    s = add_command(sub, "demo", cmd_demo, help="quick-start demo: a known question forgotten, a retain question kept")
    s.add_argument("--target", default=DEFAULT_TARGET, help="which target (see `target list`)")
    s.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
