"""``features stats|show|select``: per-feature statistics, one feature's dashboard, selection."""

from __future__ import annotations

from unlearn_core.cli.common import (
    add_command,
    add_model_variant_arg,
    emit,
    engine_of,
    progress_bar,
    sae_key,
    settings_of,
)


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
    if args.target:
        return _select_for_target(args, engine, key)
    if args.method not in (None, "frequency"):
        raise ValueError(f"--method {args.method} ranks features by a target's questions: name one with --target")
    bar = progress_bar(args.tokens * 2, "feature stats (forget, retain)")
    fs = F.feature_stats(engine, key, args.forget, n_tokens=args.tokens, progress=bar.update)
    rs = F.feature_stats(engine, key, args.retain, n_tokens=args.tokens, progress=bar.update)
    bar.close()
    threshold = 0.01 if args.threshold is None else args.threshold
    rows = F.select_features(fs.freq, rs.freq, threshold, args.n or 20)
    if args.describe:
        for r in rows:
            r["description"] = F.auto_description(engine, key, r["feature"], fs)
    lines = [f"{'feature':>8} {'forget':>8} {'retain':>8}  description"]
    lines += [
        f"{r['feature']:>8} {r['forget_freq']:>8.4f} {r['retain_freq']:>8.4f}  {r.get('description', '')}" for r in rows
    ]
    emit(
        args,
        {"forget": args.forget, "retain": args.retain, "threshold": threshold, "features": rows},
        "\n".join(lines),
    )


def _select_for_target(args, engine, key: str) -> None:
    """A target's selection by ``--method`` (default: the target's own); the question-based ones
    show their known filter and their scores as two bars, each with its total up front."""
    from unlearn_core.evaluation import target_scores as TS
    from unlearn_core.evaluation import targets as T
    from unlearn_core.features import stats as F

    settings = settings_of(args)  # the tiny backend's engine does not carry --targets
    t = T.get_target(args.target, settings.targets_file, T.saved_targets_dir(settings))
    method = T.selection_method(t, args.method, args.threshold)
    scores = None
    if method in T.QUESTION_METHODS:
        forget, retain = TS.train_question_sets(engine, t)
        bar = progress_bar(len(forget) + len(retain), f"{t.name}: known filter on the train half (questions)")
        known = TS.known_train_questions(engine, t, forget, retain, progress=bar.update)
        bar.close()
        bar = progress_bar(len(known[0]) + len(known[1]), f"{t.name}: {method} scores (questions)")
        scores = TS.target_feature_scores(engine, t, key, method, progress=bar.update, questions=known)
        bar.close()
    out = T.select_for_target(engine, t, key, n=args.n, threshold=args.threshold, method=method, scores=scores)
    fs = out.pop("forget_stats")
    rows = out["features"]
    if args.describe:
        for r in rows:
            r["description"] = F.auto_description(engine, key, r["feature"], fs)
    lines = [T.selection_text(out), f"{'feature':>8} {'score':>11} {'forget':>8} {'retain':>8}  description"]
    lines += [
        f"{r['feature']:>8} {_fmt_score(r.get('score')):>11} {r['forget_freq']:>8.4f} {r['retain_freq']:>8.4f}  "
        f"{r.get('description', '')}"
        for r in rows
    ]
    emit(args, out, "\n".join(lines))


def _fmt_score(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


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
    f = add_command(
        fsub,
        "select",
        cmd_features_select,
        help="forget vs retain selection (paper / SAEBench), or a target's (--target) by any method",
    )
    f.add_argument("--forget", default="wmdp-bio-text@train", help="without --target: the forget corpus")
    f.add_argument("--retain", default="wikitext@train", help="without --target: the retain corpus")
    f.add_argument(
        "--target", help="select for this target (its corpora; attribution and fisher: its train-half questions)"
    )
    f.add_argument(
        "--method",
        choices=["frequency", "search", "attribution", "fisher"],
        help="with --target: how to rank (default: the target's own); attribution = activation x gradient of "
        "the correct answer's log-probability, forget minus retain; fisher = Dynamic SAE Guardrails' selection",
    )
    f.add_argument("--threshold", type=float, help="frequency method: retain frequency below this (default 0.01)")
    f.add_argument("-n", type=int, help="how many features (default 20, or the target's)")
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("--describe", action="store_true", help="add automatic descriptions")
    f.add_argument("--on")
    add_model_variant_arg(f)
