"""Do a target's selected features read as topics? For each built-in target, the top 10 features
of its selection (its retain corpora and threshold from the registry), the words each peaks on in
its 12 max-activating forget-text contexts, and whether it fires on topic tokens or on format
tokens.

A peak word is a *format* token when it is a single character, has no letter, is a stopword, or
is one of the quiz format's words (A-D, Question, Answer, Which, What, following). A feature
counts as *topic* when most of its top contexts peak on non-format words.

    python bench/target_topics.py [--sae FOLDER] [--out docs/reports/target_topics.md]

(docs/results/ holds only pages generated from a JSON: this script's hand-read report goes to
docs/reports/, where a rerun replaces the report's dated banner line: put it back.)
    python bench/target_topics.py --target sherlock --retain quiz:retain@train wikitext@train webtext-train
    python bench/target_topics.py --target sherlock --forget quiz:sherlock@train
    python bench/target_topics.py --target sherlock --threshold 0.003
    python bench/target_topics.py --target sherlock --method search --n 20

``--retain``, ``--forget``, ``--threshold``, ``--method`` and ``--n`` replace the retain corpora, the
forget corpus, the retain threshold, the selection method (search: the target's query) or N of the
``--target`` given, to see how another selection (e.g. the sweep's paper one) reads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common import load, machine, parser

from unlearn_core.evaluation.targets import load_targets, select_for_target, selection_text
from unlearn_core.features import stats as F
from unlearn_core.features.descriptions import STOPWORDS, describe_examples, peak_word

FORMAT_WORDS = {"a", "b", "c", "d", "question", "answer", "which", "what", "following"}


def is_format(word: str) -> bool:
    w = word.strip().strip(".,;:!?()[]\"'").lower()
    return len(w) <= 1 or not any(ch.isalpha() for ch in w) or w in STOPWORDS or w in FORMAT_WORDS


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--target", help="only this target (default: every built-in one)")
    p.add_argument("--retain", nargs="+", help="with --target: these retain corpora instead of the registry's")
    p.add_argument("--forget", help="with --target: this forget corpus instead of the registry's")
    p.add_argument("--threshold", type=float, help="with --target: this retain threshold instead of the registry's")
    p.add_argument(
        "--method",
        choices=["frequency", "search"],
        help="with --target: this selection method instead of the registry's (search: its query)",
    )
    p.add_argument("--n", type=int, help="with --target: this many features (the table shows the top --top)")
    args = p.parse_args()
    if (args.retain or args.forget or args.threshold or args.method or args.n) and not args.target:
        p.error("--retain, --forget, --threshold, --method and --n need --target")
    targets = load_targets()
    if args.target:
        targets = {args.target: targets[args.target]}
        overrides = {"retain_corpora": tuple(args.retain or ()), "forget_corpus": args.forget}
        targets[args.target] = replace(targets[args.target], **{k: v for k, v in overrides.items() if v})
        sel = {k: v for k, v in (("method", args.method), ("n", args.n)) if v}
        targets[args.target] = replace(targets[args.target], selection=replace(targets[args.target].selection, **sel))
    engine, _ = load(args)
    sae = args.sae
    lines = [f"machine: {machine()}; SAE {sae} ({engine.saes[sae].hook_name}, d_sae {engine.saes[sae].d_sae})", ""]
    summary = []
    for name, t in targets.items():
        sel = select_for_target(engine, t, sae, threshold=args.threshold)
        fs = sel["forget_stats"]
        lines += [
            f"#### {name} (forget corpus {sel['forget_corpus']}; {selection_text(sel)})",
            "",
            "| feature | forget freq | peaks on | around | reads as |",
            "| --- | --- | --- | --- | --- |",
        ]
        n_topic = 0
        rows = sel["features"][: args.top]
        for r in rows:
            ex = F.top_examples(engine, fs, r["feature"], k=12, n_quantiles=0, context=12)["top"]
            words = [peak_word(e["tokens"], e["peak"]) for e in ex]
            topic = sum(not is_format(w) for w in words) > len(words) / 2
            n_topic += topic
            d = describe_examples(ex)
            lines.append(
                f"| {r['feature']} | {r['forget_freq']:.4f} | {', '.join(d['fires_on']) or '—'} | "
                f"{', '.join(d['context'][:4]) or '—'} | {'topic' if topic else 'format'} |"
            )
        summary.append((name, n_topic, len(rows)))
        lines.append("")
    lines.append("| target | topic features in the top 10 |")
    lines.append("| --- | --- |")
    lines += [f"| {n} | {k} of {m} |" for n, k, m in summary]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
