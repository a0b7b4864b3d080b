"""Greedy generation with the KV cache (the app's and the book study's generations), with
TransformerLens's own unembedding (which copies the whole W_U for every token) and with the
copy-free one the engine installs, in the same run, with and without a clamp.

    python bench/generate.py [--tokens 40] [--repeats 3]
"""

from __future__ import annotations

from common import load, machine, parser, pct, timeit

from unlearn_core.evaluation.metrics import generate
from unlearn_core.method.interventions import Intervention

PROMPT = "The main function of the mitochondria in a cell is"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tokens", type=int, default=40)
    p.set_defaults(repeats=3)
    args = p.parse_args()
    engine, _ = load(args)
    unembed = engine.model.unembed
    fast_forward = unembed.__dict__["forward"]  # installed by load_model
    iv = [Intervention(args.sae, tuple(range(20)), 50.0)]
    rows, texts = [], {}
    for label, ivs in (("base", None), ("clamped (20 features, c=50)", iv)):
        for impl in ("TransformerLens Unembed", "copy-free Unembed"):
            if impl.startswith("Transformer"):
                del unembed.forward
            else:
                unembed.forward = fast_forward
            generate(engine, PROMPT, ivs, max_new_tokens=2)
            times = timeit(
                lambda: texts.__setitem__((label, impl), generate(engine, PROMPT, ivs, max_new_tokens=args.tokens)),
                args.repeats,
            )
            rows.append((label, impl, times))
        assert texts[(label, "TransformerLens Unembed")] == texts[(label, "copy-free Unembed")], "outputs differ"
    print(f"machine: {machine()}")
    print(f"{args.model}; prompt {PROMPT!r}; {args.tokens} new tokens, greedy, KV cache\n")
    print("| generation | unembedding | new tokens | p50 | tokens/s | runs |\n| --- | --- | --- | --- | --- | --- |")
    for label, impl, times in rows:
        n = len(engine.model.tokenizer(texts[(label, impl)], add_special_tokens=False)["input_ids"])
        print(f"| {label} | {impl} | {n} | {pct(times, 0.5):.2f} s | {n / pct(times, 0.5):.1f} | {len(times)} |")
    print("\nidentical text from both unembeddings (greedy).")


if __name__ == "__main__":
    main()
