"""Are text search's top hits about the query, or about its sub-tokens?

A word typed alone ("anthrax") is split into sub-tokens ('anth', 'rax'); the features that fire
hardest on them in isolation are often token features that also fire on "Anthony" or LaTeX.
This benchmark compares rankings of the features a query activates by where those features fire
in real text: for each of the top ``--k`` hits, the *domain lift*, log10 of its firing frequency
on a corpus of the query's domain over that on WebText. A topic feature fires far more on its
domain (lift >= 1: ten times as often); a sub-token feature does not.

Rankings compared (``features.text_search``):

* ``word``: the query alone (the ranking until 2026-12-07);
* ``context``: the query read inside the neutral carrier sentences of ``text_search.CARRIERS``,
  each feature's specificity on the query's own tokens averaged over the carriers.

The domains are fixed before looking (bio queries: WMDP-bio question text; Sherlock Holmes
queries: the book's train half); no setting of the ranking is fitted to them.

    python bench/text_search_quality.py [--k 10]
"""

from __future__ import annotations

import math

from common import load, machine, parser

from unlearn_core.features import stats as F
from unlearn_core.features.text_search import search_by_text

QUERIES = {
    "anthrax": "wmdp-bio-text",
    "vaccine": "wmdp-bio-text",
    "influenza virus": "wmdp-bio-text",
    "toxin": "wmdp-bio-text",
    "Sherlock Holmes": "sherlock@train",
    "Dr. Watson": "sherlock@train",
    "Baker Street": "sherlock@train",
}
BACKGROUND = "webtext"


def lift(domain: F.FeatureStats, general: F.FeatureStats, f: int) -> float:
    return math.log10((float(domain.freq[f]) + 1e-6) / (float(general.freq[f]) + 1e-6))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--tokens", type=int, default=50_000, help="statistics tokens per corpus")
    args = p.parse_args()
    engine, _ = load(args)
    sae = engine.default_sae
    general = F.feature_stats(engine, sae, BACKGROUND, n_tokens=args.tokens)
    domains = {c: F.feature_stats(engine, sae, c, n_tokens=args.tokens) for c in sorted(set(QUERIES.values()))}
    print(machine())
    print(f"\n| query | domain | ranking | mean lift of top {args.k} | lift >= 1 | top 3 (feature: peak token) |")
    print("| --- | --- | --- | --- | --- | --- |")
    totals: dict[str, list[float]] = {}
    for q, dom in QUERIES.items():
        for how in ("word", "context"):
            hits = search_by_text(
                engine,
                sae,
                q,
                k=args.k,
                background=general.freq,
                background_max=general.max_act,
                rank="specificity",
                context=how == "context",
            )
            lifts = [lift(domains[dom], general, h["feature"]) for h in hits]
            totals.setdefault(how, []).extend(lifts)
            top3 = ", ".join(f"{h['feature']}: {h['top_token']!r}" for h in hits[:3])
            mean = sum(lifts) / max(1, len(lifts))
            print(f"| {q} | {dom} | {how} | {mean:+.2f} | {sum(x >= 1 for x in lifts)}/{len(lifts)} | {top3} |")
    print()
    for how, xs in totals.items():
        print(f"{how}: mean lift {sum(xs) / len(xs):+.3f} over {len(xs)} hits; lift >= 1: {sum(x >= 1 for x in xs)}")


if __name__ == "__main__":
    main()
