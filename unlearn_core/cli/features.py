"""``features stats|show|select``: per-feature statistics, one feature's dashboard, selection."""

from __future__ import annotations

from unlearn_core.cli.common import add_command, add_model_variant_arg, emit, engine_of, progress_bar, sae_key


def cmd_features_stats(args) -> None:
    from unlearn_core.features import stats as F

    engine = engine_of(args)
    key = sae_key(args, engine)
    out = {}
    for corpus in args.corpus:
        bar = progress_bar(args.tokens, f"feature stats on {corpus}")
        st = F.feature_stats(engine, key, corpus, n_tokens=args.tokens, progress=bar.update)
        bar.close()
        order = torch_argsort_desc(st.freq)[: args.top]
        out[corpus] = {
            "n_tokens": st.n_tokens,
            "alive_fraction": float((st.freq > 0).float().mean()),
            "mean_l0": float(st.freq.sum()),
            "most_frequent": [
                {"feature": int(i), "freq": float(st.freq[i]), "max_act": float(st.max_act[i])} for i in order
            ],
        }
    lines = []
    for c, o in out.items():
        lines.append(
            f"{c}: {o['n_tokens']} tokens, {o['alive_fraction']:.1%} of features fire, mean L0 {o['mean_l0']:.1f}"
        )
        lines += [f"   #{r['feature']:<6} freq={r['freq']:.4f} max={r['max_act']:.2f}" for r in o["most_frequent"]]
    emit(args, out, "\n".join(lines))


def torch_argsort_desc(t):
    import torch

    return torch.argsort(t, descending=True).tolist()


def _render_example(e: dict) -> str:
    """Tokens with the activation in brackets where the feature fires."""
    return "".join(f"[{t}|{v:.1f}]" if v > 0 else t for t, v in zip(e["tokens"], e["values"])).replace("\n", "⏎")


def cmd_features_show(args) -> None:
    from unlearn_core.features import stats as F

    engine = engine_of(args)
    key = sae_key(args, engine)
    d = F.dashboard(engine, key, args.feature, args.corpus, n_tokens=args.tokens, k=args.k)
    lines = [f"feature {args.feature} of {key}   {d['description']}"]
    if d["neuronpedia"] is not None:
        np_ = d["neuronpedia"]
        lines.append(
            "neuronpedia: " + (", ".join(np_.get("explanations") or []) or "(no explanation)")
            if np_.get("available")
            else f"neuronpedia: unavailable ({np_.get('message')})"
        )
    lines.append("promotes: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in d["logits"]["top"]))
    lines.append("suppresses: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in d["logits"]["bottom"]))
    for corpus, c in d["corpora"].items():
        lines.append(
            f"--- {corpus}: freq {c['freq']:.4f}, max {c['max_act']:.2f}, mean when active "
            f"{c['mean_active']:.2f} ({c['n_tokens']} tokens)"
        )
        lines += [f"  {e['max']:6.2f}  {_render_example(e)}" for e in c["examples"]["top"]]
    emit(args, d, "\n".join(lines))


def cmd_features_select(args) -> None:
    from unlearn_core.features import stats as F

    engine = engine_of(args)
    key = sae_key(args, engine)
    bar = progress_bar(args.tokens * 2, "feature stats (forget, retain)")
    fs = F.feature_stats(engine, key, args.forget, n_tokens=args.tokens, progress=bar.update)
    rs = F.feature_stats(engine, key, args.retain, n_tokens=args.tokens, progress=bar.update)
    bar.close()
    rows = F.select_features(fs.freq, rs.freq, args.threshold, args.n)
    if args.describe:
        for r in rows:
            r["description"] = F.auto_description(engine, key, r["feature"], fs)
    lines = [f"{'feature':>8} {'forget':>8} {'retain':>8}  description"]
    lines += [
        f"{r['feature']:>8} {r['forget_freq']:>8.4f} {r['retain_freq']:>8.4f}  {r.get('description', '')}" for r in rows
    ]
    emit(
        args,
        {"forget": args.forget, "retain": args.retain, "threshold": args.threshold, "features": rows},
        "\n".join(lines),
    )


def add_parsers(sub) -> None:
    s = sub.add_parser("features", help="feature statistics, dashboards and selection")
    fsub = s.add_subparsers(dest="fcmd", required=True)
    f = add_command(
        fsub, "stats", cmd_features_stats, help="per-feature firing frequency, mean/max activation on corpora"
    )
    f.add_argument(
        "--corpus",
        nargs="+",
        default=["webtext"],
        help="webtext | wikitext | sherlock | pile | wmdp-bio-text | mmlu:<subj> | path; '@train'/'@heldout'",
    )
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("--top", type=int, default=10)
    f.add_argument("--on", help="which SAE (default: the first)")
    add_model_variant_arg(f)
    f = add_command(fsub, "show", cmd_features_show, help="a text dashboard of one feature")
    f.add_argument("feature", type=int)
    f.add_argument("--corpus", nargs="+", default=["webtext", "wmdp-bio-text"])
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("-k", type=int, default=6)
    f.add_argument("--on")
    add_model_variant_arg(f)
    f = add_command(fsub, "select", cmd_features_select, help="forget vs retain selection (paper / SAEBench)")
    f.add_argument("--forget", default="wmdp-bio-text@train")
    f.add_argument("--retain", default="wikitext@train")
    f.add_argument("--threshold", type=float, default=0.01)
    f.add_argument("-n", type=int, default=20)
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("--describe", action="store_true", help="add automatic descriptions")
    f.add_argument("--on")
    add_model_variant_arg(f)
