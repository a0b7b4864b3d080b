"""``sae-eval``, ``train-sae``, ``finetune-sae``: the SAE's quality, its training and its KL fine-tune."""

from __future__ import annotations

import sys
from typing import Callable

from unlearn_core.cli.common import LazyHelp, add_command, emit, engine_of, progress_bar, sae_key, settings_of


def cmd_sae_eval(args) -> None:
    import random

    from unlearn_core.evaluation.sae_eval import corpus_report, reconstruction_stats, spliced_perplexity
    from unlearn_core.features.stats import corpus_docs

    engine = engine_of(args)
    key = sae_key(args, engine)

    def docs_of(c: str) -> list[str]:
        if c == "sae-dev":  # the documents train-sae holds back from training, for choosing its settings
            from unlearn_core.training.train_sae import TrainSAEConfig, training_texts

            return training_texts(engine.settings.data_dir, TrainSAEConfig.seed, TrainSAEConfig.dev_fraction)[1]
        return corpus_docs(engine, c)

    per = {c: docs_of(c) for c in args.corpus}
    docs = [d for ds in per.values() for d in ds]
    random.Random(0).shuffle(docs)
    bar = progress_bar(args.tokens, "reconstruction (pooled held-out text)")
    rec = reconstruction_stats(engine, key, docs, n_tokens=args.tokens, progress=bar.update)
    bar.close()
    out = {"sae": key, "corpora": args.corpus, **rec}
    lines = [
        f"{key}: L0 {rec['l0']:.1f}, explained variance {rec['explained_variance']:.3f}, dead "
        f"{rec['dead_fraction']:.1%}, dense (> 10% of tokens) {rec['dense_fraction']:.2%} over "
        f"{rec['n_tokens']:,} tokens"
    ]
    if args.loss_tokens:
        bar = progress_bar(args.loss_tokens * 3 * len(per), "loss: clean, spliced, zero-ablated per corpus")
        out["per_corpus"] = corpus_report(engine, key, per, n_tokens=args.loss_tokens, progress=bar.update)
        bar.close()
        lines.append(f"{'corpus':<24} {'clean':>7} {'spliced':>8} {'Δloss':>7} {'recovered':>9}")
        lines += [
            f"{c:<24} {r['clean_loss']:>7.3f} {r['spliced_loss']:>8.3f} {r['delta_loss']:>7.3f} "
            f"{r['loss_recovered']:>9.3f}"
            for c, r in out["per_corpus"].items()
        ]
    if args.ppl_tokens:
        bar = progress_bar(args.ppl_tokens * 2, "WikiText-2 perplexity, clean and spliced")
        out["wikitext_ppl"] = spliced_perplexity(
            engine, key, corpus_docs(engine, "wikitext@heldout"), n_tokens=args.ppl_tokens, progress=bar.update
        )
        bar.close()
        w = out["wikitext_ppl"]
        lines.append(
            f"WikiText-2 (held-out part) perplexity: clean {w['clean']:.2f}, SAE spliced in {w['spliced']:.2f}"
        )
    emit(args, out, "\n".join(lines))


def cmd_train_sae(args) -> None:
    from unlearn_core.training.train_sae import TrainSAEConfig, train_embedded_sae, with_overrides

    cfg = with_overrides(
        TrainSAEConfig(),
        layer=args.layer,
        d_sae=args.width,
        k=args.k,
        n_tokens=args.tokens,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        aux_loss_coefficient=args.aux_coeff,
        dead_feature_window=args.dead_window,
        seed=args.seed,
        normalize=args.normalize,
        out_dir=args.out,
    )
    s = settings_of(args)
    _in_pieces(
        lambda: train_embedded_sae(cfg, cache_dir=s.cache_dir, data_dir=s.data_dir, max_minutes=args.max_minutes)
    )


def _in_pieces(work: Callable[[], object]) -> None:
    """Run resumable training and print its result; when its time runs out (a checkpoint saved),
    say so and exit with code 3, the sign to run the same command again."""
    from unlearn_core.training.train_sae import PieceDone

    try:
        out = work()
    except PieceDone as e:
        print(f"paused: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    print(out)


def cmd_finetune_sae(args) -> None:
    """KL fine-tune of the SAE's decoder (finetune_sae), in resumable pieces; the result is saved
    as a new SAE folder whose training.json adds the fine-tune's configuration and time."""
    from unlearn_core.training.finetune_sae import KLFinetuneConfig, finetune_and_save

    cfg = KLFinetuneConfig(
        **{
            k: v
            for k, v in {
                "n_tokens": args.tokens,
                "batch_size": args.batch_size,
                "pos_fraction": args.pos_fraction,
                "lr": args.lr,
                "seed": args.seed,
                "offset_tokens": args.offset_tokens,
            }.items()
            if v is not None
        }
    )
    cfg.check()  # before the model loads
    if args.max_minutes is not None and args.max_minutes < 0:
        raise ValueError("--max-minutes must be >= 0")
    engine = engine_of(args)
    key = sae_key(args, engine)
    _in_pieces(lambda: finetune_and_save(engine, key, cfg, args.out, max_minutes=args.max_minutes))


def add_eval_parser(sub) -> None:
    s = add_command(
        sub,
        "sae-eval",
        cmd_sae_eval,
        help="L0, explained variance, dead and dense features, Δloss per held-out corpus, "
        "loss recovered, WikiText-2 perplexity with the SAE spliced in",
    )
    s.add_argument(
        "--corpus",
        nargs="+",
        default=["webtext", "pile", "wikitext@heldout", "sherlock@heldout", "wmdp-bio-text@heldout"],
        help="held-out corpora (default); 'sae-dev': the documents train-sae holds back for choosing settings",
    )
    s.add_argument("--tokens", type=int, default=50_000)
    s.add_argument(
        "--loss-tokens", type=int, default=10_000, help="tokens per corpus for Δloss and loss recovered (0 skips them)"
    )
    s.add_argument(
        "--ppl-tokens",
        type=int,
        default=20_000,
        help="WikiText-2 tokens for the spliced-perplexity control (0 skips it)",
    )
    s.add_argument("--on")


def _tc():
    from unlearn_core.training.train_sae import TrainSAEConfig

    return TrainSAEConfig


def _kc():
    from unlearn_core.training.finetune_sae import KLFinetuneConfig

    return KLFinetuneConfig


def add_parsers(sub) -> None:
    """train-sae and finetune-sae; the defaults in their help are the configs' own, read only
    when the help is printed (their modules import TransformerLens)."""
    _add_train_parser(sub)
    _add_finetune_parser(sub)


def _add_train_parser(sub) -> None:
    s = add_command(
        sub,
        "train-sae",
        cmd_train_sae,
        help="(re)train the embedded SAE: activations cached once, several epochs, "
        "resumable in pieces (exit code 3: paused, run again)",
    )
    s.add_argument(
        "--layer",
        type=int,
        help=LazyHelp(lambda: f"residual layer (Gemma Scope 2 covers 5, 9, 12, 15; default {_tc().layer})"),
    )
    s.add_argument("--width", type=int, help=LazyHelp(lambda: f"d_sae (default {_tc().d_sae})"))
    s.add_argument(
        "--k", type=int, help=LazyHelp(lambda: f"mean active latents per token (BatchTopK; default {_tc().k})")
    )
    s.add_argument(
        "--tokens",
        type=int,
        help=LazyHelp(lambda: f"text tokens whose activations are cached (default {_tc().n_tokens:,})"),
    )
    s.add_argument(
        "--epochs", type=float, help=LazyHelp(lambda: f"passes over the cached activations (default {_tc().epochs:g})")
    )
    s.add_argument(
        "--batch-size", type=int, help=LazyHelp(lambda: f"activations per step (default {_tc().batch_size})")
    )
    s.add_argument("--lr", type=float, help=LazyHelp(lambda: f"Adam learning rate (default {_tc().lr:g})"))
    s.add_argument(
        "--aux-coeff",
        type=float,
        help=LazyHelp(
            lambda: f"auxiliary-k loss coefficient for dead latents (default {_tc().aux_loss_coefficient:g})"
        ),
    )
    s.add_argument(
        "--dead-window",
        type=int,
        help=LazyHelp(
            lambda: f"steps without firing before a latent counts as dead (default {_tc().dead_feature_window})"
        ),
    )
    s.add_argument("--seed", type=int)
    s.add_argument(
        "--normalize",
        choices=["expected_average_only_in", "covariance_whitening"],
        help=LazyHelp(
            lambda: (
                "input scaling while training, folded into the saved weights "
                f"(default {_tc().normalize}; covariance_whitening: PCA whitening; "
                "expected_average_only_in: a fixed mean norm)"
            )
        ),
    )
    s.add_argument("--max-minutes", type=float, help="stop after this long with a checkpoint; the same command resumes")
    s.add_argument("--out", help="output folder (default: the embedded SAE's, unlearn_core/core/assets/embedded_sae)")


def _add_finetune_parser(sub) -> None:
    s = add_command(
        sub,
        "finetune-sae",
        cmd_finetune_sae,
        help="fine-tune the SAE's decoder on KL(clean || spliced) for a lower Δloss "
        "(encoder frozen: the same features fire); resumable in pieces (exit code 3: paused, run again)",
    )
    s.add_argument("--on", help="SAE to fine-tune (default: the first loaded; --sae DIR loads a folder)")
    s.add_argument(
        "--tokens",
        type=int,
        help=LazyHelp(lambda: f"training-text tokens gone through once (default {_kc().n_tokens:,})"),
    )
    s.add_argument(
        "--batch-size",
        type=int,
        help=LazyHelp(lambda: f"windows of {_kc().ctx} tokens per step (default {_kc().batch_size})"),
    )
    s.add_argument(
        "--pos-fraction",
        type=float,
        help=LazyHelp(
            lambda: f"share of positions whose KL is taken: the unembedding's cost (default {_kc().pos_fraction:g})"
        ),
    )
    s.add_argument("--lr", type=float, help=LazyHelp(lambda: f"Adam learning rate (default {_kc().lr:g})"))
    s.add_argument("--seed", type=int)
    s.add_argument(
        "--offset-tokens",
        type=int,
        help="skip this much of the training text (a further pass, with "
        "--sae set to the last pass's output, on text that pass did not see)",
    )
    s.add_argument("--max-minutes", type=float, help="stop after this long with a checkpoint; the same command resumes")
    s.add_argument("--out", required=True, help="folder for the fine-tuned SAE (cfg.json, weights, training.json)")
