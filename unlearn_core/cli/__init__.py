"""`python -m unlearn_core` / `unlearn`: the engine from the command line.

Every subcommand prints a human-readable table, or JSON with ``--json``. Long work shows tqdm
progress bars on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from unlearn_core.data import loaders as D
from unlearn_core.method.interventions import Intervention, parse_features, validate
from unlearn_core.method.modes import MODES
from unlearn_core.core.settings import load_settings


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (also UNLEARN_* env vars or a TOML file)")
    g.add_argument("--config", help="TOML settings file (default: $UNLEARN_CONFIG or ./unlearn.toml)")
    g.add_argument("--model", help="'embedded:gemma-3-270m' (default) or a TransformerLens model name")
    g.add_argument("--sae", action="append", dest="saes",
                   help="'embedded', a local SAELens folder, or 'release:sae_id'; repeat for several")
    g.add_argument("--device", help="auto|cpu|cuda[:N]")
    g.add_argument("--dtype", help="auto|float32|bfloat16|float16")
    g.add_argument("--cache-dir")
    g.add_argument("--data-dir")
    g.add_argument("--prompt-format", choices=["auto", "plain", "chat"])
    g.add_argument("--scoring", choices=["auto", "letter", "cloze"])
    g.add_argument("--targets", dest="targets_file", help="a TOML file of your own unlearning targets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true")


def _intervention_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("intervention")
    g.add_argument("--features", help="comma-separated feature ids, e.g. 123,456")
    g.add_argument("--clamp", type=float, default=20.0, help="c: active features are set to -c (default 20)")
    g.add_argument("--mode", choices=MODES, default="clamp")
    g.add_argument("--gate", type=float, help="gated modes: tau; the clamp applies to a prompt when the fraction "
                   "of its tokens where a selected feature fires (rho) is > tau")
    g.add_argument("--gate-percentile", type=float, help="gated modes: tau = this percentile of rho over windows "
                   "of --gate-corpus (DSG uses 95); calibrated once, cached")
    g.add_argument("--gate-corpus", help="the retain corpus of --gate-percentile (default wikitext@train)")
    g.add_argument("--on", help="which SAE the features belong to (default: the first)")
    g.add_argument("--intervention", action="append", default=[],
                   help="extra intervention 'sae=KEY;features=1,2;clamp=20;mode=clamp[;gate=TAU]' (repeatable)")


def _variant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", help="also run the model variant 'rmu:<name>' (a finished `rmu train` run); "
                   "the interventions then apply on top of it")


def _with_variant(args, engine, ivs, compute) -> dict:
    """{"base": compute(None) on the model as loaded, args.variant: compute(None) on the variant,
    "intervened": compute(ivs) on the variant (else on the base model)}; absent ones left out."""
    from unlearn_core.training.rmu import applied

    out = {"base": compute(None)}
    if args.variant:
        with applied(engine, args.variant):
            out[args.variant] = compute(None)
            if ivs:
                out["intervened"] = compute(ivs)
    elif ivs:
        out["intervened"] = compute(ivs)
    return out


def _settings(args):
    return load_settings({
        "model": args.model, "saes": args.saes, "device": args.device, "dtype": args.dtype,
        "cache_dir": args.cache_dir, "data_dir": args.data_dir, "prompt_format": args.prompt_format,
        "scoring": args.scoring, "targets_file": args.targets_file,
    }, config_file=args.config)


def _gate_tau(args, engine, sae: str, features: tuple[int, ...], mode: str) -> float | None:
    """tau from --gate or --gate-percentile (gated modes only; clear errors otherwise)."""
    from unlearn_core.method.modes import GATED_MODES

    given = args.gate is not None or args.gate_percentile is not None
    if mode not in GATED_MODES:
        if given or args.gate_corpus:
            raise ValueError(f"--gate/--gate-percentile/--gate-corpus are for --mode {' or '.join(GATED_MODES)}")
        return None
    if (args.gate is None) == (args.gate_percentile is None):
        raise ValueError(f"--mode {mode} needs exactly one of --gate TAU or --gate-percentile P")
    if args.gate is not None:
        return args.gate
    from unlearn_core.method.gate import DEFAULT_CORPUS, calibrate

    validate([Intervention(sae, features, 1.0)], engine.saes)
    cal = calibrate(engine, sae, features, args.gate_corpus or DEFAULT_CORPUS, args.gate_percentile)
    print(f"gate: tau = {cal.tau:.4f}, the {cal.percentile:g}th percentile of rho over {cal.n_windows} windows of "
          f"{cal.corpus}", file=sys.stderr)
    return cal.tau


def _interventions(args, engine) -> list[Intervention]:
    ivs = []
    if args.features or args.mode == "reconstruct":
        sae, feats = args.on or engine.default_sae, parse_features(args.features or "")
        ivs.append(Intervention(sae, feats, args.clamp, args.mode, _gate_tau(args, engine, sae, feats, args.mode)))
    elif args.gate is not None or args.gate_percentile is not None:
        raise ValueError("--gate/--gate-percentile need --features")
    for spec in args.intervention:
        kv = dict(part.split("=", 1) for part in spec.split(";") if part.strip())
        ivs.append(Intervention(kv.get("sae", engine.default_sae), parse_features(kv.get("features", "")),
                                float(kv.get("clamp", 20.0)), kv.get("mode", "clamp"),
                                float(kv["gate"]) if "gate" in kv else None))
    return ivs


def _bar(total: int | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _engine(args):
    """The engine; with ``--model-variant rmu:<name>`` (the feature commands) that RMU model in
    place of the model as loaded, until the command ends (``main`` restores the weights)."""
    if getattr(args, "tiny", False):
        from unlearn_core.model.tiny import tiny_engine

        engine = tiny_engine(cache_dir=_settings(args).cache_dir)
    else:
        from unlearn_core.model.engine import load_engine

        engine = load_engine(_settings(args))
    if getattr(args, "apply_variant", None):
        from unlearn_core.training.rmu import applied

        args.held.enter_context(applied(engine, args.apply_variant))
    return engine


def _model_variant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
    p.add_argument("--model-variant", dest="apply_variant", metavar="rmu:NAME",
                   help="run on this RMU model (a finished `rmu train` run) in place of the model as loaded")


def _out(args, obj, text: str) -> None:
    print(json.dumps(obj, indent=2) if args.json else text)


def cmd_info(args) -> None:
    s = _settings(args)
    out = {"settings": s.as_dict(), "data_sources": D.data_sources(s.data_dir)}
    if args.load:
        out["engine"] = _engine(args).info()
    lines = [f"{k:>14}: {v}" for k, v in s.as_dict().items()] + ["data sources:"]
    lines += [f"{k:>14}: {v}" for k, v in out["data_sources"].items()]
    if args.load:
        lines += ["loaded:"] + [f"{k:>14}: {v}" for k, v in out["engine"].items() if k != "data_sources"]
    _out(args, out, "\n".join(lines))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_cache(args) -> None:
    from unlearn_core.core.cache import CACHE_VERSION
    from unlearn_core.core.cache_admin import audit_markdown, cache_info, clear_cache

    if getattr(args, "markdown", False):
        print(audit_markdown(), end="")
        return
    cache_dir = _settings(args).cache_dir
    if args.cache_cmd == "clear":
        gone = clear_cache(cache_dir, args.kind)
        lines = [f"removed {r['kind']}: {r['files']} files, {_human_bytes(r['bytes'])}" for r in gone]
        _out(args, {"cache_dir": cache_dir, "removed": gone}, "\n".join(lines) or "nothing to remove")
        return
    rows = cache_info(cache_dir)
    lines = [f"cache folder {cache_dir} (key version {CACHE_VERSION}; `cache clear` removes the derived kinds, "
             "`cache clear --kind K` any one)"]
    lines += [f"{r['kind']:>14}  {r['files']:>6} files  {_human_bytes(r['bytes']):>10}  "
              f"{'derived' if r['derived'] else 'user results'}: {r['what']}\n{'':>16}key: {r['key']}" for r in rows]
    _out(args, {"cache_dir": cache_dir, "version": CACHE_VERSION, "kinds": rows}, "\n".join(lines))


def _fmt_probs(probs) -> str:
    return "  ".join(f"{L}={p:.3f}" for L, p in zip(D.LETTERS, probs))


def cmd_mcq(args) -> None:
    from unlearn_core.evaluation.mcq import score_question

    engine = _engine(args)
    qs = D.load_question_set(args.questions, engine.settings.data_dir)
    if args.question_id:
        matches = [q for q in qs.questions if q.id == args.question_id]
        if not matches:
            raise SystemExit(f"no question with id {args.question_id!r} in {qs.name}")
        q = matches[0]
    else:
        if not 0 <= args.index < len(qs.questions):
            raise SystemExit(f"--index must be in [0, {len(qs.questions) - 1}]")
        q = qs.questions[args.index]
    ivs = _interventions(args, engine)
    got = _with_variant(args, engine, ivs, lambda iv: score_question(engine, q, iv))
    inter = got.get("intervened")
    obj = {"question": q.to_dict(), "set": qs.label, "scoring": engine.scoring, "base": got["base"].to_dict(),
           "interventions": [iv.__dict__ for iv in ivs], "intervened": inter.to_dict() if inter else None}
    if args.variant:
        obj["variant"] = {"name": args.variant, **got[args.variant].to_dict()}
    text = [f"[{qs.label}] {q.id}", q.question] + [f"  {L}. {c}" for L, c in zip(D.LETTERS, q.choices)]
    text += [f"correct: {D.LETTERS[q.answer]}   scoring: {engine.scoring}"]
    for name, sc in got.items():
        what = f"   ({'; '.join(iv.label() for iv in ivs)}{' on ' + args.variant if args.variant else ''})" \
            if name == "intervened" else ""
        text.append(f"{name:<10}: {_fmt_probs(sc.probs)}  -> {D.LETTERS[sc.predicted]}{what}")
    _out(args, obj, "\n".join(text))


def cmd_eval(args) -> None:
    from unlearn_core.evaluation.mcq import accuracy, all_orderings, known_questions, score_questions
    from unlearn_core.evaluation.metrics import loss_added

    engine = _engine(args)
    ivs = _interventions(args, engine)
    result: dict = {"scoring": engine.scoring, "prompt_format": engine.prompt_format,
                    "interventions": [iv.__dict__ for iv in ivs], "sets": {}}
    lines = []
    for spec in args.questions:
        qs = D.load_question_set(spec, engine.settings.data_dir)
        questions = qs.questions[: args.limit] if args.limit else qs.questions
        if args.known:
            bar = _bar(len(questions), f"known filter {qs.name}")
            questions = known_questions(engine, questions, progress=bar.update, strict=args.strict)
            bar.close()
        expand = engine.scoring == "letter" and args.orderings
        items = [v for q in questions for v in all_orderings(q)] if expand else questions
        bar = _bar(len(items) * (2 if ivs else 1), f"scoring {qs.name}")
        base = accuracy(score_questions(engine, items, progress=bar.update))
        inter = accuracy(score_questions(engine, items, ivs, progress=bar.update)) if ivs else None
        bar.close()
        known_filter = ("strict" if args.strict else True) if args.known else False
        result["sets"][spec] = {"label": qs.label, "is_fallback": qs.is_fallback, "n_questions": len(questions),
                                "n_scored": len(items), "known_filter": known_filter, "base_accuracy": base,
                                "intervened_accuracy": inter}
        lines.append(f"{qs.label:<40} n={len(questions):<5} base={base:.3f}"
                     + (f"  intervened={inter:.3f}" if inter is not None else ""))
    if args.loss_tokens and ivs:
        docs = D.load_corpus(args.loss_corpus, engine.settings.data_dir)
        bar = _bar(args.loss_tokens * 2, f"loss added on {args.loss_corpus}")
        la = loss_added(engine, docs, ivs, n_tokens=args.loss_tokens, corpus=args.loss_corpus, progress=bar.update)
        bar.close()
        result["loss_added"] = la.to_dict()
        lines.append(f"loss added on {args.loss_corpus} ({la.n_tokens} tokens): {la.loss_added:+.4f} "
                     f"(clean {la.clean_loss:.4f}, intervened {la.intervened_loss:.4f})")
    _out(args, result, "\n".join(lines))


def cmd_ppl(args) -> None:
    from unlearn_core.evaluation.metrics import perplexity

    engine = _engine(args)
    ivs = _interventions(args, engine)
    docs = D.load_corpus(args.corpus, engine.settings.data_dir, part=args.part)

    def run(iv):
        bar = _bar(args.tokens, "perplexity")
        r = perplexity(engine, docs, iv, n_tokens=args.tokens, ctx=args.ctx, progress=bar.update)
        bar.close()
        return r

    out = _with_variant(args, engine, ivs, run)
    _out(args, {"corpus": args.corpus, **out},
         "\n".join(f"{k:<10} ppl={v['perplexity']:.3f} over {v['n_tokens']} tokens (ctx {v['ctx']})"
                   for k, v in out.items()))


def cmd_generate(args) -> None:
    from unlearn_core.evaluation.metrics import generate

    engine = _engine(args)
    ivs = _interventions(args, engine)
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    out = {"prompt": args.prompt, **_with_variant(args, engine, ivs, lambda iv: generate(engine, args.prompt, iv, **kw))}
    _out(args, out, "\n".join(f"--- {k}\n{v}" for k, v in out.items()))


def cmd_train_sae(args) -> None:
    from unlearn_core.training.train_sae import PieceDone, TrainSAEConfig, train_embedded_sae, with_overrides

    cfg = with_overrides(TrainSAEConfig(), layer=args.layer, d_sae=args.width, k=args.k, n_tokens=args.tokens,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         aux_loss_coefficient=args.aux_coeff, dead_feature_window=args.dead_window, seed=args.seed,
                         normalize=args.normalize, out_dir=args.out)
    s = _settings(args)
    try:
        out = train_embedded_sae(cfg, cache_dir=s.cache_dir, data_dir=s.data_dir, max_minutes=args.max_minutes)
    except PieceDone as e:
        print(f"paused: {e}", file=sys.stderr)
        raise SystemExit(3)
    print(out)


def cmd_finetune_sae(args) -> None:
    """KL fine-tune of the SAE's decoder (finetune_sae), in resumable pieces; the result is saved
    as a new SAE folder whose training.json adds the fine-tune's configuration and time."""
    from unlearn_core.training.finetune_sae import KLFinetuneConfig, PieceDone, finetune_and_save

    cfg = KLFinetuneConfig(**{k: v for k, v in {"n_tokens": args.tokens, "batch_size": args.batch_size,
                                                  "pos_fraction": args.pos_fraction, "lr": args.lr,
                                                  "seed": args.seed, "offset_tokens": args.offset_tokens}.items() if v is not None})
    cfg.check()  # before the model loads
    if args.max_minutes is not None and args.max_minutes < 0:
        raise ValueError("--max-minutes must be >= 0")
    engine = _engine(args)
    key = _sae_key(args, engine)
    try:
        out = finetune_and_save(engine, key, cfg, args.out, max_minutes=args.max_minutes)
    except PieceDone as e:
        print(f"paused: {e}", file=sys.stderr)
        raise SystemExit(3)
    print(out)


def _sae_key(args, engine) -> str:
    key = args.on or engine.default_sae
    if key not in engine.saes:
        raise ValueError(f"unknown SAE {key!r}; loaded: {sorted(engine.saes)}")
    return key


def cmd_features_stats(args) -> None:
    from unlearn_core.features import stats as F

    engine = _engine(args)
    key = _sae_key(args, engine)
    out = {}
    for corpus in args.corpus:
        bar = _bar(args.tokens, f"feature stats on {corpus}")
        st = F.feature_stats(engine, key, corpus, n_tokens=args.tokens, progress=bar.update)
        bar.close()
        order = torch_argsort_desc(st.freq)[: args.top]
        out[corpus] = {"n_tokens": st.n_tokens, "alive_fraction": float((st.freq > 0).float().mean()),
                       "mean_l0": float(st.freq.sum()),
                       "most_frequent": [{"feature": int(i), "freq": float(st.freq[i]),
                                          "max_act": float(st.max_act[i])} for i in order]}
    lines = []
    for c, o in out.items():
        lines.append(f"{c}: {o['n_tokens']} tokens, {o['alive_fraction']:.1%} of features fire, "
                     f"mean L0 {o['mean_l0']:.1f}")
        lines += [f"   #{r['feature']:<6} freq={r['freq']:.4f} max={r['max_act']:.2f}" for r in o["most_frequent"]]
    _out(args, out, "\n".join(lines))


def torch_argsort_desc(t):
    import torch

    return torch.argsort(t, descending=True).tolist()


def _render_example(e: dict) -> str:
    """Tokens with the activation in brackets where the feature fires."""
    return "".join(f"[{t}|{v:.1f}]" if v > 0 else t for t, v in zip(e["tokens"], e["values"])).replace("\n", "⏎")


def cmd_features_show(args) -> None:
    from unlearn_core.features import stats as F

    engine = _engine(args)
    key = _sae_key(args, engine)
    d = F.dashboard(engine, key, args.feature, args.corpus, n_tokens=args.tokens, k=args.k)
    lines = [f"feature {args.feature} of {key}   {d['description']}"]
    if d["neuronpedia"] is not None:
        np_ = d["neuronpedia"]
        lines.append("neuronpedia: " + (", ".join(np_.get("explanations") or []) or "(no explanation)")
                     if np_.get("available") else f"neuronpedia: unavailable ({np_.get('message')})")
    lines.append("promotes: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in d["logits"]["top"]))
    lines.append("suppresses: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in d["logits"]["bottom"]))
    for corpus, c in d["corpora"].items():
        lines.append(f"--- {corpus}: freq {c['freq']:.4f}, max {c['max_act']:.2f}, mean when active "
                     f"{c['mean_active']:.2f} ({c['n_tokens']} tokens)")
        lines += [f"  {e['max']:6.2f}  {_render_example(e)}" for e in c["examples"]["top"]]
    _out(args, d, "\n".join(lines))


def cmd_features_select(args) -> None:
    from unlearn_core.features import stats as F

    engine = _engine(args)
    key = _sae_key(args, engine)
    bar = _bar(args.tokens * 2, "feature stats (forget, retain)")
    fs = F.feature_stats(engine, key, args.forget, n_tokens=args.tokens, progress=bar.update)
    rs = F.feature_stats(engine, key, args.retain, n_tokens=args.tokens, progress=bar.update)
    bar.close()
    rows = F.select_features(fs.freq, rs.freq, args.threshold, args.n)
    if args.describe:
        for r in rows:
            r["description"] = F.auto_description(engine, key, r["feature"], fs)
    lines = [f"{'feature':>8} {'forget':>8} {'retain':>8}  description"]
    lines += [f"{r['feature']:>8} {r['forget_freq']:>8.4f} {r['retain_freq']:>8.4f}  {r.get('description', '')}"
              for r in rows]
    _out(args, {"forget": args.forget, "retain": args.retain, "threshold": args.threshold, "features": rows},
         "\n".join(lines))


def cmd_sae_eval(args) -> None:
    import random

    from unlearn_core.features.stats import corpus_docs
    from unlearn_core.evaluation.sae_eval import corpus_report, reconstruction_stats, spliced_perplexity

    engine = _engine(args)
    key = _sae_key(args, engine)
    def docs_of(c: str) -> list[str]:
        if c == "sae-dev":  # the documents train-sae holds back from training, for choosing its settings
            from unlearn_core.training.train_sae import TrainSAEConfig, training_texts

            return training_texts(engine.settings.data_dir, TrainSAEConfig.seed, TrainSAEConfig.dev_fraction)[1]
        return corpus_docs(engine, c)

    per = {c: docs_of(c) for c in args.corpus}
    docs = [d for ds in per.values() for d in ds]
    random.Random(0).shuffle(docs)
    bar = _bar(args.tokens, "reconstruction (pooled held-out text)")
    rec = reconstruction_stats(engine, key, docs, n_tokens=args.tokens, progress=bar.update)
    bar.close()
    out = {"sae": key, "corpora": args.corpus, **rec}
    lines = [f"{key}: L0 {rec['l0']:.1f}, explained variance {rec['explained_variance']:.3f}, dead "
             f"{rec['dead_fraction']:.1%}, dense (> 10% of tokens) {rec['dense_fraction']:.2%} over "
             f"{rec['n_tokens']:,} tokens"]
    if args.loss_tokens:
        bar = _bar(args.loss_tokens * 3 * len(per), "loss: clean, spliced, zero-ablated per corpus")
        out["per_corpus"] = corpus_report(engine, key, per, n_tokens=args.loss_tokens, progress=bar.update)
        bar.close()
        lines.append(f"{'corpus':<24} {'clean':>7} {'spliced':>8} {'Δloss':>7} {'recovered':>9}")
        lines += [f"{c:<24} {r['clean_loss']:>7.3f} {r['spliced_loss']:>8.3f} {r['delta_loss']:>7.3f} "
                  f"{r['loss_recovered']:>9.3f}" for c, r in out["per_corpus"].items()]
    if args.ppl_tokens:
        bar = _bar(args.ppl_tokens * 2, "WikiText-2 perplexity, clean and spliced")
        out["wikitext_ppl"] = spliced_perplexity(engine, key, corpus_docs(engine, "wikitext@heldout"),
                                                 n_tokens=args.ppl_tokens, progress=bar.update)
        bar.close()
        w = out["wikitext_ppl"]
        lines.append(f"WikiText-2 (held-out part) perplexity: clean {w['clean']:.2f}, SAE spliced in {w['spliced']:.2f}")
    _out(args, out, "\n".join(lines))


def cmd_sweep(args) -> None:
    """A batch evaluation (the server's job code, run here), locally or on Ray workers; resumable:
    the same command on the same --out resumes an unfinished run of the same spec."""
    import threading

    from unlearn_core.server.jobs import FINAL, JobRunner, JobStore
    from unlearn_core.server.schemas import JobSpec
    from unlearn_core.server.state import ServerState

    s = _settings(args)
    engine = _engine(args)
    # the tiny engine builds its own settings: carry over what the command line gave
    engine.settings.data_dir = s.data_dir or engine.settings.data_dir
    engine.settings.targets_file = s.targets_file or engine.settings.targets_file
    engine.settings.job_backend = args.backend or s.job_backend
    engine.settings.ray_workers = args.workers or s.ray_workers
    engine.settings.ray_address = args.address or s.ray_address
    if args.delay_per_config and not args.tiny:
        raise ValueError("--delay-per-config is a test option, only with --tiny")
    fields = {"thresholds": _floats(args.thresholds), "ns": [int(x) for x in _floats(args.n)],
              "values": _floats(args.clamps), "question_limit": args.limit, "known": not args.all_questions,
              "delay_per_config": args.delay_per_config}
    for k, v in (("target", args.target), ("forget_set", args.forget_set), ("side_effect_sets", args.side_set),
                 ("selection_tokens", args.selection_tokens),
                 ("loss_tokens", args.loss_tokens), ("mode", args.mode),
                 ("modes", args.modes.replace(",", " ").split() if args.modes else None), ("gate", args.gate),
                 ("gate_percentile", args.gate_percentile), ("gate_corpus", args.gate_corpus),
                 ("variants", args.variants.replace(",", " ").split() if args.variants else None),
                 ("model_variant", args.model_variant)):
        if v is not None:
            fields[k] = v
    state = ServerState(lambda: engine)
    runner = JobRunner(state, allow_delay=args.tiny)
    spec = runner.prepare(JobSpec(**fields))
    out = Path(args.out)
    runner.store = store = JobStore(out / "jobs")
    ns = engine.cache_namespace()
    same = json.dumps(spec, sort_keys=True)
    job = next((j for j in reversed(store.load_all()) if j.status not in FINAL and j.namespace == ns
                and json.dumps(j.spec, sort_keys=True) == same), None)
    if job is not None:
        print(f"resuming run {job.id}: {job.done} of {job.total} configurations already done", file=sys.stderr)
    else:
        job = store.create(spec, ns)
    runner.jobs[job.id] = job
    bar = _bar(job.total, f"sweep ({engine.settings.job_backend})")
    bar.update(job.done)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            bar.set_postfix_str(job.phase or "")
            bar.update(job.done - bar.n)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.time()
    try:
        runner.run_job(job)
    finally:
        stop.set()
        watcher.join()
        bar.update(job.done - bar.n)
        bar.close()
        runner.close_pool()
    if job.status != "done":
        raise RuntimeError(f"the sweep {job.status}: {job.error or ''} (rows so far in {store.dir(job.id)})")
    from unlearn_core.ui.render import result_rows

    rows = result_rows(job.results)
    obj = {"job": job.id, "backend": engine.settings.job_backend, "seconds": round(time.time() - t0, 3),
           "setup_s": job.setup_s,
           "configurations_s": round(time.time() - job.phase_started, 3) if job.phase_started else None,
           "results": rows, "tasks": job.tasks}
    _write_sweep(out, obj)
    cols = ["config", "forget_accuracy", "forget_n", "side_effect_mean", "side_n", "loss_added"]

    def cell(v) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["  ".join(f"{c:<18}" for c in cols)]
    lines += ["  ".join(f"{cell(r.get(c)):<18}" for c in cols) for r in rows]
    lines.append(f"{len(rows)} configurations; run {job.id}; results in {out / 'results.csv'}")
    _out(args, obj, "\n".join(lines))


def _write_sweep(out: Path, obj: dict) -> None:
    """results.json (everything) and results.csv (the batch page's table) under ``out``."""
    import pandas as pd

    from unlearn_core.core.cache import atomic_write_json

    atomic_write_json(out / "results.json", obj)
    pd.DataFrame(obj["results"]).to_csv(out / "results.csv", index=False)


def cmd_serve(args) -> None:
    from unlearn_core.server import serve

    serve(_settings(args), host=args.host, port=args.port, tiny=args.tiny,
          log_level="info" if args.verbose else "warning")


def cmd_demo(args) -> None:
    """The quick-start demo: a target's default intervention flips a question the model knows."""
    from unlearn_core.evaluation.demo import run_demo

    from unlearn_core.features.targets import engine_target

    engine = _engine(args)
    t = engine_target(engine, args.target)
    # no total: a corpus may hold fewer tokens than the budget (a quiz half is ~2k tokens)
    bar = _bar(None, f"feature statistics on {1 + len(t.retain_corpora)} corpora, tokens (first run only, then cached)")
    out = run_demo(engine, args.target, progress=lambda n, msg: print(f"[demo] {msg}", file=sys.stderr),
                   stats_progress=bar.update)
    bar.close()
    _out(args, out, demo_text(out))


def _question_lines(d: dict) -> list[str]:
    return [d["question"]] + [f"  {L}. {c}" + ("   <- correct" if i == d["answer"] else "")
                              for i, (L, c) in enumerate(zip(D.LETTERS, d["choices"]))]


def demo_text(out: dict) -> str:
    iv = out["intervention"]
    lines = [f"target {out['target']}: {out['description']}",
             f"default intervention: {iv['mode']} {len(iv['features'])} features of {iv['sae']} to -c, c = {iv['c']:g}"
             f" (selected on {out['forget_corpus']} vs {', '.join(out['retain_corpora'])})", ""]
    f = out["forget_example"]
    if f:
        lines += ["FORGET question (the clean model knows it: correct, and not guessable without the question):"]
        lines += _question_lines(f["question"])
        lines += [f"  clean    : {_fmt_probs(f['base']['probs'])}  -> {D.LETTERS[f['base']['predicted']]} (right)",
                  f"  clamped  : {_fmt_probs(f['intervened']['probs'])}  -> {D.LETTERS[f['intervened']['predicted']]} "
                  + ("(wrong: forgotten)" if not f["intervened"]["correct"] else "(still right)")]
    else:
        lines.append("no known forget question changed its answer under the default intervention "
                     f"(checked {out['n_checked_forget']})")
    r = out["retain_example"]
    if r:
        lines += ["", "RETAIN question (general knowledge, should stay right):"]
        lines += _question_lines(r["question"])
        lines += [f"  clean    : {_fmt_probs(r['base']['probs'])}  -> {D.LETTERS[r['base']['predicted']]}",
                  f"  clamped  : {_fmt_probs(r['intervened']['probs'])}  -> {D.LETTERS[r['intervened']['predicted']]} "
                  + ("(kept)" if r["intervened"]["correct"] else "(lost)")]
    lines += ["", out["summary"]]
    return "\n".join(lines)


def cmd_target_list(args) -> None:
    from unlearn_core.features.targets import load_targets, saved_targets_dir

    s = _settings(args)
    ts = load_targets(s.targets_file, saved_targets_dir(s))
    out = [t.to_dict() for t in ts.values()]
    lines = [f"{t.name:<12} [{t.source}] {t.description}\n{'':<13}forget: {t.forget_corpus} / {t.forget_questions}; "
             f"retain: {', '.join(t.retain_corpora)} / {', '.join(t.retain_questions)}; default: {t.intervention.mode} "
             f"N={t.selection.n} c={t.intervention.c:g}" for t in ts.values()]
    _out(args, out, "\n".join(lines))


def cmd_target_eval(args) -> None:
    from unlearn_core.features.targets import engine_target, evaluate_target

    engine = _engine(args)
    t = engine_target(engine, args.name)
    bar = _bar(0, f"target {t.name}: known filter")
    r = evaluate_target(engine, t, args.forget_questions, args.retain_questions, loss_tokens=args.loss_tokens,
                        progress=lambda n=1: bar.update(n))
    bar.close()
    obj = {k: r[k] for k in ("target", "intervention", "forget", "retain", "loss_added")}
    obj["details"] = {k: v for k, v in r.items() if k not in obj}

    def line(name, d):
        if d["n_known"] == 0:
            return f"{name:<8} {d['questions']}: {d['n_known']} of {d['n_questions']} known: nothing to score"
        return (f"{name:<8} {d['questions']}: {d['n_known']} of {d['n_questions']} known; accuracy "
                f"{d['base_accuracy']:.3f} -> {d['intervened_accuracy']:.3f}")

    iv = r["intervention"]
    lines = [f"target {t.name}: {iv['mode']} {len(iv['features'])} features, c = {iv['c']:g} ({r['scoring']} scoring, "
             f"{'strict ' if r['strict_known'] else ''}known questions)", line("forget", r["forget"])]
    lines += [line("retain", d) for d in r["retain_sets"]]
    if r["loss_added"] is not None:
        lines.append(f"loss added on {r['loss_corpus']} ({r['loss_tokens']} tokens): {r['loss_added']:+.4f} nats")
    _out(args, obj, "\n".join(lines))


def cmd_experiment(args) -> None:
    from unlearn_core.evaluation.experiments import writeups as X

    if args.which == "targets" and args.render_only:
        return _experiment_targets(args, None)
    engine = _engine(args)
    if args.which == "targets":
        return _experiment_targets(args, engine)
    if args.which == "book" and args.target:  # the study's design on a target's default intervention
        from unlearn_core.features.targets import default_intervention, engine_target

        t = engine_target(engine, args.target[0])
        iv = default_intervention(engine, t)
        r = X.book_experiment(engine, iv.sae_key, features=iv.features, c=iv.c, ppl_tokens=args.ppl_tokens,
                              prompt=t.demo_prompt or "Sherlock Holmes took his bottle from the corner of the")
        md = X.book_markdown(r)
        if args.out:
            X.save(r, md, args.out)
        return _out(args, r, md)
    if args.which == "wmdp":
        r = X.wmdp_experiment(engine, args.on, stats_tokens=args.stats_tokens, ppl_tokens=args.ppl_tokens,
                              loss_tokens=args.ppl_tokens, mmlu_limit=args.mmlu_limit, wmdp_limit=args.wmdp_limit)
        md = X.wmdp_markdown(r)
    else:
        r = X.book_experiment(engine, args.on, stats_tokens=args.stats_tokens, ppl_tokens=args.ppl_tokens)
        md = X.book_markdown(r)
    if args.out:
        X.save(r, md, args.out)
    _out(args, r, md)


def cmd_gate(args) -> None:
    """Static vs gated clamp on a target's held-out known questions, and the filler probe."""
    from unlearn_core.evaluation.experiments import gate as GX
    from unlearn_core.evaluation.experiments.writeups import save
    from unlearn_core.features.targets import engine_target

    engine = _engine(args)
    t = engine_target(engine, args.target)
    bar = _bar(None, "configurations")
    r = GX.compare(engine, t, list(_floats(args.clamps)), [int(n) for n in _floats(args.ns)] if args.ns else None,
                   args.percentile, args.loss_tokens, progress=lambda i, n: bar.update(1))
    bar.close()
    md = "## static vs gated\n\n" + GX.markdown(r)
    if args.out:  # kept even if the probe fails
        save(r, md, args.out)
    if args.probe_clamp:
        bar = _bar(None, "robustness probe")
        p = GX.probe(engine, t, args.probe_clamp, args.percentile, n=args.probe_n, progress=lambda i, n: bar.update(1))
        bar.close()
        r["probe"] = p
        md += "\n\n## robustness: benign filler around the forget questions\n\n" + GX.probe_markdown(p)
        if args.out:  # the curve as a page to open in a browser
            from unlearn_core.ui.figures import probe_figure

            html = Path(args.out).with_suffix(".probe.html")
            probe_figure(p["rows"], f"{t.name}: N = {p['n']}, c = {p['c']:g}, τ = {p['gate']['tau']:.3f}").write_html(
                html, include_plotlyjs=True)
            md += f"\n\nThe curve: {html}"
    if args.out:
        save(r, md, args.out)
    _out(args, r, md)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.replace(",", " ").split())


def _rmu_config(args, engine):
    from unlearn_core.training.rmu import default_config

    ups = tuple(int(x) for x in _floats(args.update_layers)) if args.update_layers else None
    return default_config(engine.model_name, layer=args.layer, update_layers=ups, steering_coeff=args.coeff,
                          alpha=args.alpha, lr=args.lr, batch_size=args.batch_size, steps=args.steps, ctx=args.ctx,
                          seed=args.seed).resolved(engine.model.cfg.n_layers)


def _rmu_bar():
    bar = _bar(None, "RMU")

    def update(rec: dict) -> None:
        if bar.total != rec["steps"]:
            bar.reset(total=rec["steps"])
            bar.update(rec["step"])
        else:
            bar.update(rec["step"] - bar.n)
        bar.set_postfix_str(f"forget {rec['forget_loss']:.3g} retain {rec['retain_loss']:.3g} "
                            f"ETA {rec['eta_s']:.0f}s")

    return bar, update


def cmd_rmu(args) -> None:
    """RMU: train a run on a target, list runs, compare with the clamps, or search settings."""
    from unlearn_core.training import rmu
    from unlearn_core.evaluation.experiments import rmu as RX
    from unlearn_core.evaluation.experiments.writeups import save
    from unlearn_core.features.targets import engine_target

    if args.rcmd == "list":
        runs = rmu.list_runs(_settings(args).cache_dir)
        _out(args, runs, "\n".join(f"rmu:{r['name']:<24} {r['status']:<10} target {r.get('target')}  "
                                    f"{r.get('steps_done', '')} steps {r.get('seconds', '')} s" for r in runs)
             or "no RMU runs")
        return
    engine = _engine(args)
    t = engine_target(engine, args.target)
    cfg = _rmu_config(args, engine)
    bar, update = _rmu_bar()
    if args.rcmd == "train":
        card = rmu.train(engine, args.name, t, cfg, progress=update, fresh=args.fresh)
        bar.close()
        _out(args, card, f"rmu:{args.name}: {card['steps_done']} steps in {card['seconds']:.0f} s on {card['cpu']}; "
             f"last losses: forget {card['history'][-1]['forget_loss']:.4g}, retain "
             f"{card['history'][-1]['retain_loss']:.4g}; delta in {rmu.run_dir(engine.settings.cache_dir, args.name)}")
    elif args.rcmd == "compare":
        from unlearn_core.evaluation.experiments import gate as GX

        cbar = None

        def prog(i, n):
            nonlocal cbar
            cbar = cbar or _bar(n, "clamp configurations")
            cbar.update(1)

        r = RX.compare(engine, t, args.name, cfg, list(_floats(args.clamps)),
                       [int(n) for n in _floats(args.ns)] if args.ns else None, args.percentile, args.loss_tokens,
                       train_progress=update, progress=prog, ppl_tokens=args.ppl_tokens)
        bar.close()
        md = "## RMU vs static and gated clamps\n\n" + GX.markdown(r) + (
            f"\n\nRMU run `rmu:{args.name}`: {r['rmu']['config']}, {r['rmu']['steps_done']} steps, "
            f"{r['rmu']['seconds']:.0f} s of training on {r['rmu']['cpu']}")
        if args.out:
            save(r, md, args.out)
        _out(args, r, md)
    else:  # search
        grid = [dict(layer=int(L), steering_coeff=c, alpha=a, **({"lr": lr} if lr else {}))
                for L in _floats(args.layers) for c in _floats(args.coeffs) for a in _floats(args.alphas)
                for lr in (_floats(args.lrs) if args.lrs else [None])]
        sbar = _bar(2 * len(grid), "RMU search (train, then evaluate)")
        s = RX.search(engine, t, grid, cfg, loss_tokens=args.loss_tokens, min_retain=args.min_retain,
                      progress=lambda i, n: sbar.update(1))
        sbar.close()
        bar.close()
        md = RX.search_markdown(s)
        if args.out:
            save(s, md, args.out)
        _out(args, s, md)


def _max_loss(text: str) -> float | None:
    """--max-loss (an argparse type, so a bad value fails before the model loads): nats, or 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of nats or 'none', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _experiment_targets(args, engine) -> None:
    """Per target: the sweep (choose on the train half, report the held-out half)."""
    from unlearn_core.evaluation.experiments import writeups as X
    from unlearn_core.evaluation.experiments import targets as TX
    from unlearn_core.features.targets import get_target, saved_targets_dir

    settings = _settings(args)
    out = {}
    for name in args.target or ["bio-basics", "sherlock"]:
        t = get_target(name, settings.targets_file, saved_targets_dir(settings))
        if args.render_only:  # the saved sweep, re-marked against the registry as it is now
            r = json.loads((Path(args.out) / f"targets_{name}.json").read_text())
            TX.mark_shipped(r["rows"], t)
        else:
            r = TX.run(engine, t, thresholds=_floats(args.thresholds), ns=tuple(int(x) for x in _floats(args.ns)),
                       values=_floats(args.values), loss_tokens=args.loss_tokens, ppl_tokens=args.ppl_tokens,
                       min_retain=args.min_retain, max_loss=args.max_loss)
        md = TX.markdown(r)
        if args.out:
            X.save(r, md, f"{args.out.rstrip('/')}/targets_{name}")
        out[name] = r
        print(md + "\n")
    if args.json:
        print(json.dumps(out, indent=2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unlearn", description="SAE Unlearning Workbench engine")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("info", help="print the settings, data sources (and with --load, the loaded model)")
    _common(s)
    s.add_argument("--load", action="store_true", help="also load the model and SAEs")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("mcq", help="one question: probabilities with and without an intervention")
    _common(s)
    _intervention_args(s)
    s.add_argument("--questions", default="wmdp-bio",
                   help="wmdp-bio | mmlu:<subject,...> | mmlu:side-effects | quiz:<bio|sherlock|retain> | a .json/.csv file")
    s.add_argument("--index", type=int, default=0)
    s.add_argument("--question-id")
    _variant_arg(s)
    s.set_defaults(func=cmd_mcq)

    s = sub.add_parser("eval", help="accuracy on question sets (known filter), loss added")
    _common(s)
    _intervention_args(s)
    s.add_argument("--questions", nargs="+", default=["wmdp-bio", "mmlu:side-effects"],
                   help="question sets: wmdp-bio, mmlu:<subjects>, quiz:<name>, a .json/.csv file; @train/@heldout, !flag")
    s.add_argument("--limit", type=int, default=0, help="first N questions of each set (0 = all)")
    s.add_argument("--known", action="store_true", help="keep only questions the clean model knows")
    s.add_argument("--strict", action="store_true",
                   help="with --known: also drop questions answered correctly with the question text removed")
    s.add_argument("--orderings", action="store_true", help="letter scoring: score all 24 orderings")
    s.add_argument("--loss-corpus", default="webtext")
    s.add_argument("--loss-tokens", type=int, default=50_000, help="0 disables loss added")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("ppl", help="perplexity of a corpus with and without an intervention")
    _common(s)
    _intervention_args(s)
    s.add_argument("--corpus", default="wikitext", help="webtext | wikitext | sherlock | pile | wmdp-bio-text | path")
    s.add_argument("--part", default="all", choices=["all", "train", "heldout"])
    s.add_argument("--tokens", type=int, default=20_000)
    s.add_argument("--ctx", type=int, default=256)
    _variant_arg(s)
    s.set_defaults(func=cmd_ppl)

    s = sub.add_parser("generate", help="base vs intervened generation")
    _common(s)
    _intervention_args(s)
    s.add_argument("--prompt", required=True)
    s.add_argument("--max-new-tokens", type=int, default=40)
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    _variant_arg(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("features", help="feature statistics, dashboards and selection")
    fsub = s.add_subparsers(dest="fcmd", required=True)
    f = fsub.add_parser("stats", help="per-feature firing frequency, mean/max activation on corpora")
    _common(f)
    f.add_argument("--corpus", nargs="+", default=["webtext"],
                   help="webtext | wikitext | sherlock | pile | wmdp-bio-text | mmlu:<subj> | path; '@train'/'@heldout'")
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("--top", type=int, default=10)
    f.add_argument("--on", help="which SAE (default: the first)")
    _model_variant_arg(f)
    f.set_defaults(func=cmd_features_stats)
    f = fsub.add_parser("show", help="a text dashboard of one feature")
    _common(f)
    f.add_argument("feature", type=int)
    f.add_argument("--corpus", nargs="+", default=["webtext", "wmdp-bio-text"])
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("-k", type=int, default=6)
    f.add_argument("--on")
    _model_variant_arg(f)
    f.set_defaults(func=cmd_features_show)
    f = fsub.add_parser("select", help="forget vs retain selection (paper / SAEBench)")
    _common(f)
    f.add_argument("--forget", default="wmdp-bio-text@train")
    f.add_argument("--retain", default="wikitext@train")
    f.add_argument("--threshold", type=float, default=0.01)
    f.add_argument("-n", type=int, default=20)
    f.add_argument("--tokens", type=int, default=100_000)
    f.add_argument("--describe", action="store_true", help="add automatic descriptions")
    f.add_argument("--on")
    _model_variant_arg(f)
    f.set_defaults(func=cmd_features_select)

    s = sub.add_parser("sae-eval", help="L0, explained variance, dead and dense features, Δloss per held-out corpus, "
                       "loss recovered, WikiText-2 perplexity with the SAE spliced in")
    _common(s)
    s.add_argument("--corpus", nargs="+", default=["webtext", "pile", "wikitext@heldout", "sherlock@heldout",
                                                   "wmdp-bio-text@heldout"],
                   help="held-out corpora (default); 'sae-dev': the documents train-sae holds back for choosing settings")
    s.add_argument("--tokens", type=int, default=50_000)
    s.add_argument("--loss-tokens", type=int, default=10_000, help="tokens per corpus for Δloss and loss recovered "
                   "(0 skips them)")
    s.add_argument("--ppl-tokens", type=int, default=20_000, help="WikiText-2 tokens for the spliced-perplexity "
                   "control (0 skips it)")
    s.add_argument("--on")
    s.set_defaults(func=cmd_sae_eval)

    s = sub.add_parser("demo", help="quick-start demo: a known question forgotten, a retain question kept")
    _common(s)
    s.add_argument("--target", default="bio-basics", help="which target (see `target list`)")
    s.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("target", help="unlearning targets: list them, evaluate a default intervention")
    tsub = s.add_subparsers(dest="tcmd", required=True)
    t = tsub.add_parser("list", help="built-in and user targets")
    _common(t)
    t.set_defaults(func=cmd_target_list)
    t = tsub.add_parser("eval", help="apply a target's default intervention; accuracy on known questions")
    _common(t)
    t.add_argument("name")
    t.add_argument("--forget-questions", help="a question file (.json WMDP schema or .csv) instead of the target's")
    t.add_argument("--retain-questions", action="append", help="a question file (repeatable) instead of the target's")
    t.add_argument("--loss-tokens", type=int, default=20_000, help="tokens of loss added (0 skips it)")
    t.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
    t.set_defaults(func=cmd_target_eval)

    s = sub.add_parser("experiment", help="the write-ups' experiments (wmdp | book) and the targets sweep (targets)")
    _common(s)
    s.add_argument("which", choices=["wmdp", "book", "targets"])
    s.add_argument("--target", action="append",
                   help="targets: which (repeatable; default bio-basics and sherlock); book: use this target's "
                        "default intervention instead of the paper's selection")
    s.add_argument("--thresholds", default="0.01", help="targets: retain thresholds, e.g. '0.01,0.003'")
    s.add_argument("--ns", default="20,50,100", help="targets: numbers of features")
    s.add_argument("--values", default="100,200,400", help="targets: clamp values c")
    s.add_argument("--loss-tokens", type=int, default=1500, help="targets: WebText tokens of loss added per row")
    s.add_argument("--min-retain", type=float, default=0.9, help="targets: retain accuracy the default must keep")
    s.add_argument("--max-loss", type=_max_loss, default=None,
                   help="targets: a budget for the choice, in nats of loss added on WebText's train split "
                        "(e.g. 0.05, the targets' goal); default none")
    s.add_argument("--render-only", action="store_true",
                   help="targets: re-write the markdown of a saved sweep (--out) against the registry as it is now")
    s.add_argument("--stats-tokens", type=int, default=100_000)
    s.add_argument("--ppl-tokens", type=int, default=4000)
    s.add_argument("--mmlu-limit", type=int, default=100, help="first N questions of each side-effect subject")
    s.add_argument("--wmdp-limit", type=int, default=0, help="first N held-out WMDP-bio questions (0 = all 255)")
    s.add_argument("--out", help="write <out>.json and <out>.md (targets: a folder, one pair per target)")
    s.add_argument("--on")
    s.set_defaults(func=cmd_experiment)

    s = sub.add_parser("gate", help="static vs gated clamp on a target's known questions, and the filler probe")
    _common(s)
    s.add_argument("--target", default="bio-basics")
    s.add_argument("--clamps", default="25,50,100,200,400", help="clamp values c")
    s.add_argument("--ns", help="numbers of top features of the target's selection (default: its own N)")
    s.add_argument("--percentile", type=float, default=95.0, help="tau = this percentile of rho on the retain corpora")
    s.add_argument("--loss-tokens", type=int, default=10_000)
    s.add_argument("--probe-clamp", type=float, help="also run the filler probe at this c")
    s.add_argument("--probe-n", type=int, help="the probe's N (default: the target's own N)")
    s.add_argument("--out", help="write <out>.json and <out>.md")
    s.set_defaults(func=cmd_gate)

    s = sub.add_parser("rmu", help="RMU fine-tuning baseline: train on a target, list, compare with the clamps")
    rsub = s.add_subparsers(dest="rcmd", required=True)
    r = rsub.add_parser("list", help="RMU runs in the cache directory")
    _common(r)
    r.set_defaults(func=cmd_rmu)
    for name, hlp in (("train", "train (or resume) an RMU run on a target's forget and retain text"),
                      ("compare", "RMU vs static and gated clamps on the target's held-out known questions (trains "
                                  "the run first if needed)"),
                      ("search", "pick RMU settings on the target's dev (train-half) known questions")):
        r = rsub.add_parser(name, help=hlp)
        _common(r)
        r.add_argument("--target", default="bio-basics")
        if name != "search":
            r.add_argument("--name", required=True, help="the run's name; the model variant is rmu:<name>")
        g = r.add_argument_group("hyperparameters (default: assets/rmu.toml for the model, else the reference's)")
        g.add_argument("--layer", type=int, help="the steered layer (residual stream after this block)")
        g.add_argument("--update-layers", help="blocks whose MLP W_out is trained, e.g. 3,4,5 (default layer-2..layer)")
        g.add_argument("--coeff", type=float, help="steering coefficient c (0: no forget term, the no-op control)")
        g.add_argument("--alpha", type=float, help="retain loss weight")
        g.add_argument("--lr", type=float)
        g.add_argument("--batch-size", type=int)
        g.add_argument("--steps", type=int, help="batches")
        g.add_argument("--ctx", type=int, help="tokens per training window")
        g.add_argument("--seed", type=int)
        r.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
        if name == "train":
            r.add_argument("--fresh", action="store_true", help="discard an unfinished or finished run of this name")
        if name == "compare":
            r.add_argument("--clamps", default="100,200,400", help="clamp values c of the SAE configurations")
            r.add_argument("--ns", help="numbers of top features of the target's selection (default: its own N)")
            r.add_argument("--percentile", type=float, default=95.0, help="gate tau percentile on the retain corpora")
            r.add_argument("--ppl-tokens", type=int, default=2000, help="perplexity on the target's ppl corpus per "
                           "row (0 skips it)")
        if name == "search":
            r.add_argument("--layers", default="5", help="steered layers to try")
            r.add_argument("--coeffs", default="100,300", help="steering coefficients to try")
            r.add_argument("--alphas", default="10,100", help="retain weights to try")
            r.add_argument("--lrs", help="learning rates to try (default: --lr, else the model's)")
            r.add_argument("--min-retain", type=float, default=0.95, help="dev retain mean a pick must keep")
        if name != "train":
            r.add_argument("--loss-tokens", type=int, default=10_000 if name == "compare" else 5_000)
            r.add_argument("--out", help="write <out>.json and <out>.md")
        r.set_defaults(func=cmd_rmu)

    from unlearn_core.training.train_sae import TrainSAEConfig as TC  # the defaults in the help are the config's own

    s = sub.add_parser("train-sae", help="(re)train the embedded SAE: activations cached once, several epochs, "
                       "resumable in pieces (exit code 3: paused, run again)")
    _common(s)
    s.add_argument("--layer", type=int, help=f"residual layer (Gemma Scope 2 covers 5, 9, 12, 15; default {TC.layer})")
    s.add_argument("--width", type=int, help=f"d_sae (default {TC.d_sae})")
    s.add_argument("--k", type=int, help=f"mean active latents per token (BatchTopK; default {TC.k})")
    s.add_argument("--tokens", type=int, help=f"text tokens whose activations are cached (default {TC.n_tokens:,})")
    s.add_argument("--epochs", type=float, help=f"passes over the cached activations (default {TC.epochs:g})")
    s.add_argument("--batch-size", type=int, help=f"activations per step (default {TC.batch_size})")
    s.add_argument("--lr", type=float, help=f"Adam learning rate (default {TC.lr:g})")
    s.add_argument("--aux-coeff", type=float,
                   help=f"auxiliary-k loss coefficient for dead latents (default {TC.aux_loss_coefficient:g})")
    s.add_argument("--dead-window", type=int,
                   help=f"steps without firing before a latent counts as dead (default {TC.dead_feature_window})")
    s.add_argument("--seed", type=int)
    s.add_argument("--normalize", choices=["expected_average_only_in", "covariance_whitening"],
                   help=f"input scaling while training, folded into the saved weights (default {TC.normalize}; "
                        "covariance_whitening: PCA whitening; expected_average_only_in: a fixed mean norm)")
    s.add_argument("--max-minutes", type=float, help="stop after this long with a checkpoint; the same command resumes")
    s.add_argument("--out", help="output folder (default: the embedded SAE's, unlearn_core/assets/embedded_sae)")
    s.set_defaults(func=cmd_train_sae)

    from unlearn_core.training.finetune_sae import KLFinetuneConfig as KC

    s = sub.add_parser("finetune-sae", help="fine-tune the SAE's decoder on KL(clean || spliced) for a lower Δloss "
                       "(encoder frozen: the same features fire); resumable in pieces (exit code 3: paused, run again)")
    _common(s)
    s.add_argument("--on", help="SAE to fine-tune (default: the first loaded; --sae DIR loads a folder)")
    s.add_argument("--tokens", type=int, help=f"training-text tokens gone through once (default {KC.n_tokens:,})")
    s.add_argument("--batch-size", type=int, help=f"windows of {KC.ctx} tokens per step (default {KC.batch_size})")
    s.add_argument("--pos-fraction", type=float,
                   help=f"share of positions whose KL is taken: the unembedding's cost (default {KC.pos_fraction:g})")
    s.add_argument("--lr", type=float, help=f"Adam learning rate (default {KC.lr:g})")
    s.add_argument("--seed", type=int)
    s.add_argument("--offset-tokens", type=int, help="skip this much of the training text (a further pass, with "
                   "--sae set to the last pass's output, on text that pass did not see)")
    s.add_argument("--max-minutes", type=float, help="stop after this long with a checkpoint; the same command resumes")
    s.add_argument("--out", required=True, help="folder for the fine-tuned SAE (cfg.json, weights, training.json)")
    s.set_defaults(func=cmd_finetune_sae)

    s = sub.add_parser("sweep", help="batch evaluation (threshold x N x clamp), locally or on a Ray cluster")
    _common(s)
    s.add_argument("--backend", choices=["local", "ray"], help="where configurations run (default: setting "
                   "job_backend, else local)")
    s.add_argument("--workers", type=int, help="Ray workers when starting a local Ray instance (default 2)")
    s.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a local instance)")
    s.add_argument("--tiny", action="store_true", help="the tiny random test backend (numbers mean nothing)")
    s.add_argument("--target", help="an unlearning target: its corpora and question sets (see `target list`)")
    s.add_argument("--thresholds", required=True, help="retain thresholds, e.g. 0.01,0.05")
    s.add_argument("--n", required=True, help="numbers of features, e.g. 10,20")
    s.add_argument("--clamps", required=True, help="clamp values, e.g. 20,50")
    s.add_argument("--mode", choices=MODES)
    s.add_argument("--modes", help="several modes side by side over the same configurations, e.g. clamp,gated")
    s.add_argument("--gate", type=float, help="gated modes: tau")
    s.add_argument("--gate-percentile", type=float, help="gated modes: tau = this percentile of rho on --gate-corpus, "
                   "per selection")
    s.add_argument("--gate-corpus", help="the corpus of --gate-percentile (default wikitext@train)")
    s.add_argument("--forget-set", help="forget question set (default: the target's, else wmdp-bio)")
    s.add_argument("--side-set", action="append", help="a side-effect (retain) question set; repeatable")
    s.add_argument("--limit", type=int, default=0, help="first Q questions of each set (0 = all)")
    s.add_argument("--all-questions", action="store_true", help="no known filter")
    s.add_argument("--selection-tokens", type=int, help="tokens of feature statistics per corpus")
    s.add_argument("--loss-tokens", type=int, help="tokens of loss added (0 skips it)")
    s.add_argument("--variants", help="RMU models compared as rows of their own (no clamp), e.g. rmu:bio,rmu:b2")
    s.add_argument("--model-variant", dest="model_variant", metavar="rmu:NAME",
                   help="run the clean row and every clamp on top of this RMU model (the known questions, "
                        "feature selection and clean loss stay the model as loaded's)")
    s.add_argument("--out", required=True, help="folder: results.csv, results.json and the resumable run")
    s.add_argument("--delay-per-config", type=float, default=0.0, help=argparse.SUPPRESS)  # tests, --tiny only
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("cache", help="what the disk caches hold, their keys, and how to drop them")
    csub = s.add_subparsers(dest="cache_cmd", required=True)
    c = csub.add_parser("info", help="each cache kind: files, size, what it is keyed by")
    _common(c)
    c.add_argument("--markdown", action="store_true", help="print the audit page (docs/caches.md) instead")
    c.set_defaults(func=cmd_cache)
    c = csub.add_parser("clear", help="remove cached entries (every derived kind, or the kinds named)")
    _common(c)
    c.add_argument("--kind", action="append", help="a kind from `cache info` (repeat for several); user results "
                   "(rmu, jobs, targets) are removed only when named")
    c.set_defaults(func=cmd_cache)

    s = sub.add_parser("serve", help="HTTP API server holding the model (docs at /docs)")
    _common(s)
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (set UNLEARN_TOKEN before exposing it)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--tiny", action="store_true", help="tiny random test backend instead of the real model")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    if not getattr(args, "verbose", False):
        warnings.filterwarnings("ignore")
        import transformers

        transformers.logging.set_verbosity_error()
    try:
        if hasattr(args, "device"):
            # an unusable device fails here, in one line, before anything loads: `serve` would
            # otherwise start listening and hit it in its loader thread (a traceback, no exit)
            _settings(args).resolved_device()
        with contextlib.ExitStack() as args.held:  # what the command applied to the model, undone at its end
            args.func(args)
    except (D.DataUnavailableError, ValueError, KeyError, RuntimeError, OSError) as e:
        if getattr(args, "verbose", False):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
