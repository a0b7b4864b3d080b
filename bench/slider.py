"""Latency of one clamp-slider update and of a 21-point curve, fast path vs straightforward.

Straightforward = what a hook-based tool does: a full forward of every row with the SAE
intervention hook and logits at every position, then read the answer. Engine = our
straightforward path with logits only where read. Fast = ``fastpath`` (cached upstream,
downstream only from the first changed position, values batched).

    python bench/slider.py [--sae embedded] [--repeats 20]
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch
from common import load, machine, parser, pct, row, timeit

from unlearn_core.data import loaders as D
from unlearn_core.evaluation import mcq
from unlearn_core.features.stats import encode_tokens
from unlearn_core.method import fastpath
from unlearn_core.method.interventions import Intervention


def pick_question(engine, target_tokens: int = 200):
    qs = D.load_wmdp_bio(engine.settings.data_dir).questions
    tok = engine.model.tokenizer
    return min(qs, key=lambda q: abs(len(tok(mcq.format_prompt(q, "plain"))["input_ids"]) - target_tokens))


def naive_score(engine, q, ivs, scoring):
    """Full forward with hooks and full logits for every row (the straightforward path)."""
    model = engine.model
    hooks = engine.hooks(ivs)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        if scoring == "letter":
            logits = model(model.to_tokens(mcq.format_prompt(q, "plain")))
            return torch.softmax(logits[0, -1], -1)
        tok = model.tokenizer
        prefix = [tok.bos_token_id] + tok(mcq.cloze_prefix(q), add_special_tokens=False)["input_ids"]
        rows = [prefix + tok(" " + c, add_special_tokens=False)["input_ids"] for c in q.choices]
        from unlearn_core.model.forward import pad_right

        toks, _ = pad_right(rows, 0)
        return torch.log_softmax(model(toks), -1)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--profile", action="store_true", help="also print where one fast update spends its time")
    args = p.parse_args()
    engine, load_s = load(args)
    key = args.sae
    q = pick_question(engine)
    n_tok = len(engine.model.tokenizer(mcq.format_prompt(q, "plain"))["input_ids"])
    codes = encode_tokens(engine, key, engine.model.to_tokens(mcq.format_prompt(q, "plain")))[0, 1:]
    feats = tuple(torch.argsort(codes.max(0).values, descending=True)[: args.features].tolist())
    iv = Intervention(key, feats, 20.0, "clamp")
    rng = random.Random(0)
    print(f"machine: {machine()}")
    print(
        f"model {args.model}, SAE {key} at {engine.saes[key].hook_name}; question {q.id} "
        f"({n_tok} tokens in letter format); {len(feats)} features; load {load_s:.1f}s\n"
    )
    for scoring in ("cloze", "letter"):
        fastpath._LRU.clear()
        first = timeit(lambda: fastpath.score_curve(engine, q, [iv], [20.0], scoring, "plain"), 1)
        fast1 = timeit(
            lambda: fastpath.score_curve(engine, q, [iv], [rng.uniform(1, 200)], scoring, "plain"), args.repeats
        )
        vals21 = [float(v) for v in range(0, 201, 10)]
        fast21 = timeit(
            lambda: fastpath.score_curve(engine, q, [iv], vals21, scoring, "plain"), max(3, args.repeats // 5)
        )
        eng1 = timeit(
            lambda: mcq.score_question(engine, q, [replace(iv, value=rng.uniform(1, 200))], scoring, "plain"),
            max(3, args.repeats // 4),
        )
        naive1 = timeit(
            lambda: naive_score(engine, q, [replace(iv, value=rng.uniform(1, 200))], scoring), max(3, args.repeats // 4)
        )
        # gated: what one slider step costs the server (/api/mcq): the gated score and the gate's
        # report (rho from the cached codes; the open score is the step's own when the gate is open,
        # one static step when it is shut, whose gated score is the clean one, read from the cache)
        from unlearn_core.method.gate import opened, prompt_rho

        def gated_step(tau: float) -> None:
            v = rng.uniform(1, 200)
            g = replace(iv, mode="gated", gate=tau)
            fastpath.score_curve(engine, q, [g], [v], scoring, "plain")
            if prompt_rho(engine, q, g, scoring, "plain") <= tau:
                fastpath.score_curve(engine, q, [opened(g)], [v], scoring, "plain")

        gated_open = timeit(lambda: gated_step(0.0), args.repeats)
        gated_shut = timeit(lambda: gated_step(1.0), args.repeats)
        fast1b = timeit(
            lambda: fastpath.score_curve(engine, q, [iv], [rng.uniform(1, 200)], scoring, "plain"), args.repeats
        )  # static again, after the gated runs: the ratio is not one of warm-up
        print(f"### {scoring} scoring\n")
        print("| path | p50 | p95 | runs |\n| --- | --- | --- | --- |")
        print(row("straightforward: 1 update (full forward + hook + all logits)", naive1))
        print(row("engine path: 1 update (logits only where read)", eng1))
        print(row("fast: first update (builds the per-question cache)", first))
        print(row("fast: 1 update (cached question)", fast1))
        print(row("fast: 21-point curve", fast21))
        print(row("fast: 1 update, static clamp again (after the gated rows)", fast1b))
        print(row("fast: 1 gated update, gate open (score + rho)", gated_open))
        print(row("fast: 1 gated update, gate shut (clean score + rho + the open score for the tau curve)", gated_shut))
        static = (pct(fast1, 0.5) + pct(fast1b, 0.5)) / 2
        print(
            f"\nspeed-up of one update vs straightforward: {pct(naive1, 0.5) / pct(fast1, 0.5):.1f}x; "
            f"21-point curve vs 21 straightforward updates: {21 * pct(naive1, 0.5) / pct(fast21, 0.5):.1f}x; "
            f"gated update / static update (p50, static = mean of its two rows): open "
            f"{pct(gated_open, 0.5) / static:.2f}x, shut {pct(gated_shut, 0.5) / static:.2f}x\n"
        )
        pc = fastpath.prompt_cache(engine, q, scoring, "plain", key)
        p0 = fastpath.first_changed(pc, iv)
        print(
            f"rows {pc.tokens.shape[0]} x {pc.tokens.shape[1]} tokens, shared prefix {pc.shared}, first changed "
            f"position {p0}, downstream blocks {engine.model.cfg.n_layers - pc.start_layer} of "
            f"{engine.model.cfg.n_layers}\n"
        )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fastpath.score_curve(engine, q, [iv], [33.0], scoring, "plain")
            print("```")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40))
            print("```\n")


if __name__ == "__main__":
    main()
